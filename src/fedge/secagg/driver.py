"""An in-process driver: the real device, relay and coordinator sessions, end to end.

This is what the simulator calls. Every message goes through :func:`~fedge.secagg.messages.to_wire`
and back, so byte counts are those a network would carry; time is measured around the session
objects only (this module is the I/O edge, so it may read the clock). Dropouts are simulated by
devices that vanish after a named phase, which covers every case of Bonawitz et al. 2017
(arXiv:1611.04482, §4) and Bell et al. 2020 (arXiv:2009.00727).
"""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from fedge.errors import FedgeError, SecAggConfigError, SecAggError, ShapeMismatchError
from fedge.secagg.config import SecAggConfig, SessionParams
from fedge.secagg.coordinator import CoordinatorPhase, CoordinatorSession
from fedge.secagg.crypto import RandBytes, ed25519_keypair
from fedge.secagg.device import DeviceSession
from fedge.secagg.messages import Message, RelaySum, from_wire, to_wire
from fedge.secagg.quantize import dequantize_sum
from fedge.secagg.relay import RelaySession

__all__ = ["DROP_PHASES", "SecureSumResult", "run_secure_sum"]

DROP_PHASES = ("setup", "advertise_keys", "share_keys", "masked_input")


@dataclass(frozen=True, eq=False)
class SecureSumResult:
    """What one secure-sum round produced, and what it cost."""

    total: NDArray[np.float64] | None  # dequantised sum over survivors; None if abandoned
    survivors: tuple[str, ...]
    abandoned: bool
    reason: str
    params: SessionParams
    integer_total: NDArray[np.unsignedinteger] | None = None  # the sum in Z_{2^b}
    bytes_sent_per_device: Mapping[str, int] = field(default_factory=dict)
    bytes_sent_per_gateway: Mapping[str, int] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)  # seconds, see run_secure_sum
    refusals: tuple[str, ...] = ()  # messages refused along the way, with the reason


def _roundtrip(msg: Message) -> tuple[Message, int]:
    data = to_wire(msg)
    return from_wire(data), len(data)


def run_secure_sum(
    vectors: NDArray[np.floating],
    device_ids: Sequence[str],
    gateway_of: Mapping[str, str],
    config: SecAggConfig,
    *,
    drop_after: Mapping[str, str] | None = None,
    rng: random.Random | None = None,
    randbytes: RandBytes = os.urandom,
    job_id: str = "job",
    round_id: int = 0,
) -> SecureSumResult:
    """Securely sum the rows of ``vectors`` (one per device) through gateways to a coordinator.

    ``drop_after`` maps a device to the phase after which it vanishes (one of
    :data:`DROP_PHASES`). ``rng`` draws the graph only (default: ``secrets.SystemRandom``);
    keys, seeds and masks come from ``randbytes`` (default ``os.urandom``). ``timings`` holds
    CPU seconds spent inside each role's session calls — ``device_mean_s``, ``device_max_s``
    (per device, whole round), ``relay_max_s``, ``coordinator_s`` — which stay meaningful on a
    shared machine, and the wall-clock ``device_mean_wall_s`` and ``coordinator_wall_s``.
    """
    x = np.asarray(vectors)
    n = len(device_ids)
    if x.ndim != 2 or x.shape[0] != n:
        raise ShapeMismatchError(f"expected vectors of shape ({n}, L), got {x.shape}")
    drops = dict(drop_after or {})
    bad = {p for p in drops.values() if p not in DROP_PHASES}
    if bad:
        raise SecAggConfigError(f"unknown drop phases {sorted(bad)}; use one of {DROP_PHASES}")
    missing = [d for d in device_ids if d not in gateway_of]
    if missing:
        raise SecAggConfigError(f"devices without a gateway: {missing[:5]}")
    params = config.resolve(n, int(x.shape[1]))
    row = {d: i for i, d in enumerate(device_ids)}

    keys = {d: ed25519_keypair(randbytes) for d in device_ids}
    identities = {d: pk for d, (_, pk) in keys.items()}
    coord_sk, coord_pk = ed25519_keypair(randbytes)
    clock: dict[str, float] = defaultdict(float)  # CPU seconds of this thread, per role
    wall: dict[str, float] = defaultdict(float)  # wall-clock seconds, per role
    sent: dict[str, int] = defaultdict(int)
    refusals: list[str] = []

    t0, c0 = time.perf_counter(), time.thread_time()
    coord = CoordinatorSession(
        params, device_ids, identities, coord_sk,
        job_id=job_id, round_id=round_id, rng=rng, randbytes=randbytes,
    )  # fmt: skip
    outgoing = coord.start()
    clock["coordinator"] += time.thread_time() - c0
    wall["coordinator"] += time.perf_counter() - t0
    devices = {
        d: DeviceSession(d, keys[d][0], coord_pk, identities, randbytes=randbytes)
        for d in device_ids
    }
    sites: dict[str, list[str]] = defaultdict(list)
    for d in device_ids:
        sites[gateway_of[d]].append(d)
    relays = {g: RelaySession(g, coord.session_id, params, ds) for g, ds in sites.items()}
    gone: set[str] = set()

    def timed(role: str, fn: object, *args: object) -> object:
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args)  # type: ignore[operator]
        finally:
            clock[role] += time.thread_time() - cpu
            wall[role] += time.perf_counter() - start

    def upstream(d: str, msg: Message) -> None:
        msg, size = _roundtrip(msg)
        sent[d] += size
        try:
            timed(f"relay:{gateway_of[d]}", relays[gateway_of[d]].forward, msg)
            timed("coordinator", coord.receive, msg)
        except SecAggError as exc:
            refusals.append(f"{d}: {exc}")

    def deliver(phase: str, messages: list[Message]) -> list[tuple[str, list[Message]]]:
        replies = []
        for sent_msg in messages:
            d = getattr(sent_msg, "device_id", "")
            if d in gone:
                continue
            msg, _ = _roundtrip(sent_msg)
            try:
                out = timed(f"device:{d}", devices[d].receive, msg)
            except FedgeError as exc:
                refusals.append(f"{d}: {exc}")
                gone.add(d)
                continue
            assert isinstance(out, list)
            replies.append((d, out))
            if drops.get(d) == phase:
                gone.add(d)
        return replies

    def close() -> list[Message]:
        if coord.phase in (CoordinatorPhase.DONE, CoordinatorPhase.ABANDONED):
            return []
        out = timed("coordinator", coord.close_phase)
        assert isinstance(out, list)
        return out

    # phase 1: setup → advertise keys
    for d, out in deliver("setup", outgoing):
        if drops.get(d) != "setup":
            for m in out:
                upstream(d, m)
    # phase 2: key bundles → encrypted shares
    for d, out in deliver("advertise_keys", close()):
        if drops.get(d) != "advertise_keys":
            for m in out:
                upstream(d, m)
    # phase 3: share bundles → masked inputs, summed by the relays
    for d, _ in deliver("share_keys", close()):
        if drops.get(d) == "share_keys":
            continue
        try:
            masked = timed(f"device:{d}", devices[d].mask, x[row[d]])
        except FedgeError as exc:
            refusals.append(f"{d}: {exc}")
            gone.add(d)
            continue
        assert isinstance(masked, Message)
        masked, size = _roundtrip(masked)
        sent[d] += size
        timed(f"relay:{gateway_of[d]}", relays[gateway_of[d]].receive, masked)
    gateway_bytes: dict[str, int] = {}
    if coord.phase is CoordinatorPhase.MASKED_INPUT:
        for g, relay in relays.items():
            relay_sum = timed(f"relay:{g}", relay.flush)
            if isinstance(relay_sum, RelaySum):
                msg, gateway_bytes[g] = _roundtrip(relay_sum)
                try:
                    timed("coordinator", coord.receive, msg)
                except SecAggError as exc:
                    refusals.append(f"gateway {g}: {exc}")
    # phase 4: unmask requests → sealed shares → result
    for d, out in deliver("masked_input", close()):
        if drops.get(d) != "masked_input":
            for m in out:
                upstream(d, m)
    if coord.phase is CoordinatorPhase.UNMASK:
        close()

    outcome = coord.outcome
    device_times = [clock.get(f"device:{d}", 0.0) for d in device_ids]
    relay_times = [clock.get(f"relay:{g}", 0.0) for g in relays]
    timings = {
        "device_mean_s": float(np.mean(device_times)),
        "device_max_s": float(np.max(device_times)),
        "relay_max_s": float(np.max(relay_times)),
        "coordinator_s": clock["coordinator"],
        "device_mean_wall_s": float(np.mean([wall.get(f"device:{d}", 0.0) for d in device_ids])),
        "coordinator_wall_s": wall["coordinator"],
    }
    common = {
        "params": params,
        "bytes_sent_per_device": {d: sent.get(d, 0) for d in device_ids},
        "bytes_sent_per_gateway": gateway_bytes,
        "timings": timings,
        "refusals": tuple(refusals),
    }
    if outcome is None or outcome.abandoned or outcome.total is None:
        reason = outcome.reason if outcome else f"stopped in phase {coord.phase.value}"
        return SecureSumResult(None, (), True, reason, **common)  # type: ignore[arg-type]
    total = dequantize_sum(outcome.total, len(outcome.survivors), params)
    return SecureSumResult(
        total,
        outcome.survivors,
        False,
        "",
        integer_total=outcome.total,
        **common,  # type: ignore[arg-type]
    )
