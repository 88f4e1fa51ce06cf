"""Secure aggregation on the device: run a :class:`~fedge.secagg.DeviceSession` via the gateway.

After training, a task with :attr:`~fedge.transport.messages.TaskAssignment.secagg` set does not
upload its update. Instead the device:

1. makes a fresh Ed25519 key for the round and **joins** with it, proving the key is its own by
   signing it with its fleet certificate's key (:mod:`fedge.identity.binding`);
2. polls its **inbox** (a long poll through the gateway) and feeds every message to the session;
   the first one is the coordinator's signed round setup, which arrives with the proven keys of
   the coordinator and of the device's neighbours — each checked against the fleet CA here, so
   neither the gateway nor anyone else can slip in a key of their own;
3. sends what the session answers (key advertisement, encrypted shares, unmask response) and,
   once its neighbours' shares are in, its **masked input**: the update flattened in sorted
   name order, scaled by its weight ``w = min(examples, max_examples) / max_examples`` with
   ``w`` appended (``weighting = "examples"``) or as is (``"uniform"``); the session clips it to
   the job's range, quantises it and masks it. Under distributed DP the (L2-clipped) update is
   first made this device's noised integer share
   (:func:`fedge.privacy.distributed.discretise_and_noise`: grid step γ, conditional rounding,
   discrete Gaussian noise) -- the noise is in before quantisation and masking, and the round's
   range has one quantisation level per integer, so quantising it changes nothing.

The round ends when the session answered the unmask request, or when the coordinator says the
round is done or abandoned, or at the give-up time (training deadline + the phases' timeouts).
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
from cryptography import x509
from numpy.typing import NDArray

from fedge.core.params import Params, ParamSpec
from fedge.errors import PrivacyError, ProtocolError, UnavailableError
from fedge.identity import Role, load_certificate
from fedge.identity.binding import binding_message, sign_key_binding, verify_key_binding
from fedge.privacy import ShareRule, discretise_and_noise
from fedge.secagg import DevicePhase, DeviceSession, RoundSetup, ShareBundle, from_wire, to_wire
from fedge.secagg.crypto import RandBytes, ed25519_keypair
from fedge.transport.messages import (
    KeyBinding,
    PrivacyPlan,
    Receipt,
    SecAggInbox,
    SecAggJoin,
    SecAggPlan,
    TaskAssignment,
    new_nonce,
)

__all__ = ["SecAggCredentials", "SecAggDeviceLink", "run_secure_round", "secure_vector"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class SecAggDeviceLink(Protocol):
    """The gateway's secure-aggregation routes as a device sees them."""

    def secagg_join(self, job_id: str, round_number: int, join: SecAggJoin) -> Receipt:
        """Join the round's session."""
        ...

    def secagg_submit(self, job_id: str, round_number: int, payload: bytes) -> Receipt:
        """Send one secagg wire message."""
        ...

    def secagg_inbox(self, job_id: str, round_number: int, after: int) -> SecAggInbox:
        """Fetch messages from position ``after``."""
        ...


@dataclass(frozen=True)
class SecAggCredentials:
    """The device's fleet certificate and key, and the fleet CA that vouches for its peers."""

    certificate_pem: bytes
    key_pem: bytes
    ca: x509.Certificate

    @classmethod
    def from_files(cls, ca: str | Path, cert: str | Path, key: str | Path) -> SecAggCredentials:
        """Load the device's PKI files."""
        return cls(Path(cert).read_bytes(), Path(key).read_bytes(), load_certificate(ca))


def secure_vector(
    delta: Params,
    num_examples: int,
    plan: SecAggPlan,
    privacy: PrivacyPlan | None = None,
    noise_rng: np.random.Generator | None = None,
) -> NDArray[np.float64]:
    """The vector this device securely sums (see the module docstring).

    With a distributed-DP ``privacy`` plan, ``delta`` must already be clipped to its clip_norm
    and ``noise_rng`` must be a fresh :func:`~fedge.privacy.secure_generator`.
    """
    ordered = dict(sorted(delta.items()))
    flat = ParamSpec.of(ordered).flatten(ordered).astype(np.float64)
    if privacy is not None and privacy.mode == "distributed":
        return _noised_share(flat, privacy, noise_rng).astype(np.float64)
    if plan.params.get("weighting", "examples") == "uniform":
        return flat
    cap = int(plan.params.get("max_examples", 1000))
    w = min(max(num_examples, 0), cap) / cap
    return np.concatenate([w * flat, [w]])


def _noised_share(
    flat: NDArray[np.float64], privacy: PrivacyPlan, rng: np.random.Generator | None
) -> NDArray[np.int64]:
    if rng is None:
        raise PrivacyError(
            "distributed DP needs a noise generator (fedge.privacy.secure_generator)"
        )
    d, c = privacy, privacy.clip_norm
    if c is None or d.granularity is None or d.noise_stddev is None or d.rounding_bound is None:
        raise PrivacyError("the task's distributed-DP plan is incomplete; the task is declined")
    norm = float(np.sqrt(np.dot(flat, flat)))
    if norm > c * (1 + 1e-5):  # float32 encoding may move the clipped norm by a few ulps
        raise PrivacyError(f"update norm {norm:.6g} exceeds clip_norm {c:g}: clip it first")
    rule = ShareRule(d.granularity, d.rounding_bound, d.noise_stddev)
    return discretise_and_noise(flat, rule, rng)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _verified_keys(
    bindings: list[KeyBinding], creds: SecAggCredentials, job_id: str, round_number: int
) -> tuple[bytes, dict[str, bytes]]:
    coordinator: bytes | None = None
    peers: dict[str, bytes] = {}
    for b in bindings:
        key = base64.b64decode(b.identity_key)
        role = Role.COORDINATOR if b.role == "coordinator" else Role.DEVICE
        verify_key_binding(
            b.certificate.encode(),
            base64.b64decode(b.proof),
            role=role,
            name=b.name,
            job_id=job_id,
            round_number=round_number,
            key=key,
            ca=creds.ca,
            revocation=None,  # devices hold no CRL; the coordinator checks revocation
        )
        if role is Role.COORDINATOR:
            coordinator = key
        else:
            peers[b.name] = key
    if coordinator is None:
        raise ProtocolError("the round setup came without the coordinator's proven key")
    return coordinator, peers


def run_secure_round(
    link: SecAggDeviceLink,
    task: TaskAssignment,
    device_id: str,
    vector: NDArray[np.floating],
    creds: SecAggCredentials,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    randbytes: RandBytes = os.urandom,
) -> tuple[str, str]:
    """Take part in the task's secure sum; returns ``(state, reason)``.

    ``state`` is "done" (the unmask response went out), "abandoned" (the coordinator gave up)
    or "timeout" (the give-up time passed). Protocol refusals raise fedge errors.
    """
    assert task.secagg is not None
    job, rnd = task.job_id, task.round
    timeout = float(task.secagg.params.get("phase_timeout_s", 10.0))
    give_up = max(task.deadline, clock()) + 7 * timeout + 5.0

    def call(fn: Callable[..., T], *args: object) -> T:
        while True:
            try:
                return fn(*args)
            except UnavailableError:
                if clock() + 0.5 >= give_up:
                    raise
                sleep(0.5)

    signing_key, public = ed25519_keypair(randbytes)
    message = binding_message(Role.DEVICE, device_id, job, rnd, public)
    join = SecAggJoin(
        job_id=job,
        round=rnd,
        device_id=device_id,
        nonce=new_nonce(),
        binding=KeyBinding(
            role="device",
            name=device_id,
            identity_key=_b64(public),
            certificate=creds.certificate_pem.decode(),
            proof=_b64(sign_key_binding(creds.key_pem, message)),
        ),
    )
    call(link.secagg_join, job, rnd, join)
    session: DeviceSession | None = None
    cursor = 0
    while clock() < give_up:
        box = call(link.secagg_inbox, job, rnd, cursor)
        for item in box.messages:
            msg = from_wire(base64.b64decode(item))
            if session is None:
                if not isinstance(msg, RoundSetup):
                    raise ProtocolError(f"expected the round setup first, got {msg.kind}")
                coordinator, peers = _verified_keys(box.bindings, creds, job, rnd)
                session = DeviceSession(
                    device_id, signing_key, coordinator, peers, randbytes=randbytes
                )
            for reply in session.receive(msg):
                data = to_wire(reply)
                call(link.secagg_submit, job, rnd, data)
            if isinstance(msg, ShareBundle):
                masked = to_wire(session.mask(vector))
                call(link.secagg_submit, job, rnd, masked)
            if session.phase is DevicePhase.DONE:
                return "done", ""
        cursor = box.next
        if box.state in ("done", "abandoned"):
            return box.state, box.reason
        if not box.messages:
            sleep(0.05)  # the gateway long-polls; this only guards against a busy loop
    return "timeout", f"no outcome by {give_up:.0f}"
