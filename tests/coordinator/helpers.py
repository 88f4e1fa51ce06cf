"""Builders for coordinator service tests: a clock, identities, real payloads via fedge.core.serde."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedge.aggregation import Update, WeightedMeanAccumulator
from fedge.aggregation.evaluation import EvaluationSums, eval_meta
from fedge.coordinator import ArtifactStore, CoordinatorService, CoordinatorSettings, Store
from fedge.core.params import Params, ParamSpec
from fedge.core.serde import decode_params, encode_arrays, encode_params
from fedge.identity import Identity, Role
from fedge.transport import messages as m

from .conftest import identity

ADMIN = identity(Role.ADMIN, "admin")
GW_A = identity(Role.GATEWAY, "gw-a", "s1")
GW_B = identity(Role.GATEWAY, "gw-b", "s2")


@dataclass
class Clock:
    """An injected clock: tests move time by hand."""

    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


def make_service(tmp: Path, clock: Clock, url: str | None = None) -> CoordinatorService:
    store = Store(url or f"sqlite:///{tmp / 'coord.db'}")
    settings = CoordinatorSettings(poll_interval_s=1.0, max_consecutive_abandoned=5)
    return CoordinatorService(store, ArtifactStore(tmp / "artifacts"), settings, clock)


def spec(**over: object) -> m.JobSpec:
    base: dict[str, object] = {
        "name": "digits",
        "task": "digits_mlp",
        "rounds": 2,
        "devices_per_round": 4,
        "over_selection": 1.0,
        "min_devices": 2,
        "training_deadline_s": 60.0,
        "report_deadline_s": 30.0,
        "seed": 0,
    }
    base.update(over)
    return m.JobSpec.model_validate(base)


def checkin(svc: CoordinatorService, gw: Identity, eligible: int = 2) -> m.GatewayAssignments:
    req = m.GatewayCheckIn(
        gateway_id=gw.name,
        site=str(gw.site),
        nonce=m.new_nonce(),
        online_devices=eligible,
        eligible_devices=eligible,
    )
    return svc.gateway_checkin(gw, req)


def model_params(svc: CoordinatorService, sha: str) -> Params:
    params, _ = decode_params(svc.model(ADMIN, sha))
    return params


def device_updates(spec_: ParamSpec, ids: list[str], seed: int) -> list[Update]:
    rng = np.random.default_rng(seed)
    return [
        Update(
            d,
            {
                n: (0.01 * rng.standard_normal(s)).astype(np.float32)
                for n, s in zip(spec_.names, spec_.shapes, strict=True)
            },
            int(rng.integers(5, 50)),
        )
        for d in ids
    ]


def partial_payload(
    gw: Identity,
    job: str,
    rnd: int,
    updates: list[Update],
    sums: dict[str, np.ndarray] | None = None,
    **meta_over: str,
) -> bytes:
    """What a gateway sends: float64 weighted sums and PARTIAL_KEYS metadata."""
    acc = WeightedMeanAccumulator(ParamSpec.of(updates[0].delta))
    for u in updates:
        assert acc.add(u)
    meta = {
        "kind": "partial",
        "job": job,
        "round": str(rnd),
        "gateway": gw.name,
        "site": str(gw.site),
        "nonce": m.new_nonce(),
        "total_weight": repr(acc.total_weight),
        "num_accepted": str(acc.num_accepted),
        "contributors": json.dumps([u.device_id for u in updates]),
        "rejected": "[]",
    }
    meta.update(meta_over)
    return encode_arrays({**acc.weighted_sum, **(sums or {})}, meta)


def update_payload(device: str, job: str, rnd: int, u: Update, **meta_over: str) -> bytes:
    meta = {
        "kind": "update",
        "job": job,
        "round": str(rnd),
        "device": device,
        "nonce": m.new_nonce(),
        "num_examples": str(u.num_examples),
        "train_loss": "0.5",
    }
    meta.update(meta_over)
    return encode_params(u.delta, meta)


def fedavg(base: Params, updates: list[Update]) -> Params:
    total = sum(u.num_examples for u in updates)
    return {
        n: (
            base[n].astype(np.float64)
            + sum(u.num_examples * u.delta[n].astype(np.float64) for u in updates) / total
        ).astype(np.float32)
        for n in base
    }


def run_plain_round(
    svc: CoordinatorService,
    clock: Clock,
    number: int,
    evaluation: dict[str, EvaluationSums] | None = None,
) -> list[int]:
    """Round ``number`` of job "digits": gw-a and gw-b each send a partial over two devices
    (d1, d2 / d3, d4), then it commits. Returns the partials' sizes in bytes.

    ``evaluation``: the federated evaluation sums each gateway (by name) puts in its partial."""
    for _ in range(2):  # the first check-ins let the round open, the second hand it out
        checkin(svc, GW_A, 2)
        checkin(svc, GW_B, 2)
        svc.tick()
    param_spec = svc.driver.runtime("digits").param_spec
    sizes = []
    for gw, ids in ((GW_A, ["d1", "d2"]), (GW_B, ["d3", "d4"])):
        sums = (evaluation or {}).get(gw.name)
        meta = eval_meta(sums, partial=True)
        updates = device_updates(param_spec, ids, number)
        payload = partial_payload(gw, "digits", number, updates, **meta)
        sizes.append(len(payload))
        assert svc.submit_partial(gw, "digits", number, payload).accepted
    clock.now += 1
    svc.tick()
    return sizes
