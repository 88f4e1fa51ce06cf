"""Secure aggregation over the network, coordinator side: one SecAgg+ session per round.

:class:`SecureRound` wraps a :class:`~fedge.secagg.CoordinatorSession` with what the network
adds (the in-process reference is :func:`fedge.secagg.run_secure_sum`); its settings and the
coordinator's PKI are in :mod:`.secure_setup`, the gateways' routes in :mod:`.secure_uplink`:

1. **Join.** A device that trained sends a :class:`~fedge.transport.messages.SecAggJoin`
   through its gateway: a fresh Ed25519 key bound to its fleet certificate
   (:mod:`fedge.identity.binding`). It is accepted only from the gateway of the certificate's
   site. The join phase closes when every task handed out joined (the sum of the quotas) or at
   the training deadline; then the session starts over the devices that joined.
2. **Phases.** Messages for devices wait in per-device inboxes (fetched with a cursor, long
   poll) and, in the same order, in one log per gateway: a gateway reads all its devices'
   messages in one request (:meth:`SecureRound.site_inbox`) and fans them out; messages from
   devices arrive through their gateway, one by one or many in one batch. A phase closes as
   soon as nobody is missing (:attr:`CoordinatorSession.waiting_for`) or when its deadline
   passes (``phase_timeout_s``; dropouts). In the masked-input phase gateways forward one
   :class:`~fedge.secagg.RelaySum` each by ``relay_deadline``; the coordinator waits half a
   phase longer for them.
3. **Result.** The unmasked integer sum is dequantised. With ``weighting = "examples"`` every
   device sent ``[w·Δ, w]`` with ``w = min(examples, max_examples) / max_examples``, so the last
   coordinate is Σw and the mean is Σw·Δ / Σw (FedAvg); with ``"uniform"`` it sent Δ and the mean
   is ΣΔ / survivors. Too few survivors: abandoned, nothing revealed.

Every message is bound to the round (the session id inside it), the device (must have joined via
this gateway) and the phase; out-of-phase, duplicate, foreign or replayed messages are refused
(409) and a byte-identical resend is acknowledged as a duplicate (the device may retry).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from fedge.coordinator.secure_setup import SecAggAuthority, SecureSettings
from fedge.errors import (
    AuthorizationError,
    ProtocolError,
    SecAggConfigError,
    UnknownNameError,
    ValidationError,
)
from fedge.identity import Identity
from fedge.secagg import (
    CoordinatorPhase,
    CoordinatorSession,
    Message,
    RelaySum,
    SessionParams,
    dequantize_sum,
    from_wire,
    to_wire,
)
from fedge.secagg.crypto import ed25519_keypair
from fedge.telemetry.metrics import record_secagg_phase
from fedge.telemetry.round_trace import record_finished
from fedge.transport import messages as m
from fedge.transport.errors import secagg_errors

__all__ = ["SecureResult", "SecureRound"]

_MAX_WAIT_S = 10.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SecureResult:
    """The round's outcome: the summed update and weight over the survivors, or why not."""

    abandoned: bool
    reason: str = ""
    sums: NDArray[np.float64] | None = None  # Σ w·Δ (flattened), or ΣΔ under "uniform"
    total_weight: float = 0.0
    survivors: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()  # gateways whose relay sum was counted


@dataclass
class _Join:
    gateway: str
    binding: m.KeyBinding
    key: bytes
    nonce: str


class SecureRound:
    """One round's secure aggregation at the coordinator (thread-safe; time is passed in)."""

    def __init__(
        self,
        job_id: str,
        round_number: int,
        settings: SecureSettings,
        length: int,
        authority: SecAggAuthority,
        *,
        expected: int,
        join_deadline: float,
    ) -> None:
        self.job_id, self.round_number = job_id, round_number
        self.settings, self.authority = settings, authority
        self.length = length + settings.extra
        self.expected, self.join_deadline = expected, join_deadline
        self.plan = settings.plan(job_id, round_number)
        self._signing_key, public = ed25519_keypair()
        self._binding = authority.binding(job_id, round_number, public)
        self._lock = threading.Condition()
        self._joins: dict[str, _Join] = {}
        self._session: CoordinatorSession | None = None
        self._params: SessionParams | None = None
        self._inbox: dict[str, list[str]] = {}
        self._site_log: dict[str, list[tuple[str, str]]] = {}  # gateway -> (device, message)
        self._accepted: set[bytes] = set()  # sha256 of accepted wire messages (resends)
        self.relay_contributors: dict[str, tuple[str, ...]] = {}  # gateway -> devices summed
        self.phase_deadline: float | None = None
        self.relay_deadline: float | None = None
        self.phase_started: float | None = None  # when the current phase opened (metrics)
        self.traceparent: str | None = None  # the round's trace: each closed phase is a span in it
        self.result: SecureResult | None = None

    # -- joining --------------------------------------------------------------------------------
    def join(self, gateway: Identity, join: m.SecAggJoin) -> m.Receipt:
        """Accept a device's proven key (from its own site's gateway), before the session starts."""
        if (join.job_id, join.round) != (self.job_id, self.round_number):
            raise ProtocolError(
                f"join for {join.job_id}/{join.round} sent to {self.job_id}/{self.round_number}"
            )
        key = self.authority.verify_join(gateway, join)
        b = join.binding
        with self._lock:
            held = self._joins.get(join.device_id)
            if held is not None:
                if held.nonce == join.nonce and held.binding == b:
                    return m.Receipt(accepted=True, duplicate=True, reason="already joined")
                raise ProtocolError(f"device {join.device_id!r} already joined this round")
            if self._session is not None or self.result is not None:
                raise ProtocolError(
                    f"the secure-aggregation session of {self.job_id}/{self.round_number} has "
                    "started; joins are closed (too late for this round)"
                )
            self._joins[join.device_id] = _Join(gateway.name, b, key, join.nonce)
            self._inbox[join.device_id] = []
        return m.Receipt(accepted=True)

    # -- phases ---------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Start the session or close phases whose deadline passed (or that are complete)."""
        with self._lock:
            self._advance(now)

    def _advance(self, now: float) -> None:
        while self.result is None:
            if self._session is None:
                if len(self._joins) < self.expected and now < self.join_deadline:
                    return
                self._start(now)
                continue
            if self._session.waiting_for and now < (self.phase_deadline or 0.0):
                return
            self._close_phase(now)

    def _start(self, now: float) -> None:
        devices = sorted(self._joins)
        try:
            params = self.settings.config.resolve(len(devices), self.length)
        except SecAggConfigError as exc:
            self._finish(SecureResult(True, f"{len(devices)} device(s) joined: {exc}"))
            return
        session = CoordinatorSession(
            params,
            devices,
            {d: j.key for d, j in self._joins.items()},
            self._signing_key,
            job_id=self.job_id,
            round_id=self.round_number,
        )
        self._session, self._params = session, params
        log.info(
            "job %s round %d: secure aggregation over %d devices (k=%d, t=%d, %d bits)",
            self.job_id, self.round_number, params.n, params.neighbours, params.threshold,
            params.bits,
        )  # fmt: skip
        self._route(session.start(), now)

    def _route(self, out: list[Message], now: float) -> None:
        assert self._session is not None
        for msg in out:
            device = getattr(msg, "device_id", "")
            text = base64.b64encode(to_wire(msg)).decode()
            self._inbox[device].append(text)
            self._site_log.setdefault(self._joins[device].gateway, []).append((device, text))
        timeout = self.settings.phase_timeout_s
        self.phase_started = now
        if self._session.phase is CoordinatorPhase.MASKED_INPUT:
            self.relay_deadline = now + timeout
            self.phase_deadline = now + 1.5 * timeout
        else:
            self.relay_deadline = None
            self.phase_deadline = now + timeout
        self._lock.notify_all()

    def _close_phase(self, now: float) -> None:
        session = self._session
        assert session is not None and self._params is not None
        if session.phase in (CoordinatorPhase.DONE, CoordinatorPhase.ABANDONED):
            self._conclude()
            return
        closing, missing = session.phase.value, len(session.waiting_for)
        out = session.close_phase()
        record_secagg_phase(closing, now - (self.phase_started or now), missing)
        record_finished(
            f"fedge.secagg.{closing}",
            self.phase_started or now,
            now,
            {"fedge.missing": missing},
            traceparent=self.traceparent,
        )
        log.info(
            "job %s round %d: secure phase %s closed (%d missing)",
            self.job_id, self.round_number, closing, missing,
        )  # fmt: skip
        if session.phase in (CoordinatorPhase.DONE, CoordinatorPhase.ABANDONED):
            self._conclude()
            return
        self._route(out, now)

    def _conclude(self) -> None:
        session, params = self._session, self._params
        assert session is not None and params is not None
        outcome = session.outcome
        if outcome is None or outcome.abandoned or outcome.total is None:
            reason = outcome.reason if outcome else f"stopped in phase {session.phase.value}"
            self._finish(SecureResult(True, reason))
            return
        total = dequantize_sum(outcome.total, len(outcome.survivors), params)
        if self.settings.extra:
            sums, weight = total[:-1], float(total[-1])
        else:
            sums, weight = total, float(len(outcome.survivors))
        self._finish(
            SecureResult(False, "", sums, weight, outcome.survivors, tuple(self.relay_contributors))
        )

    def _finish(self, result: SecureResult) -> None:
        self.result = result
        self._lock.notify_all()

    def abandon(self, reason: str) -> None:
        """Stop the session (e.g. the round was closed); nothing more is revealed."""
        with self._lock:
            if self.result is None:
                self._finish(SecureResult(True, reason))

    # -- messages from gateways -------------------------------------------------------------------
    def receive(
        self, gateway: Identity, data: bytes, now: float, device: str | None = None
    ) -> m.Receipt:
        """A device's message (relayed) or a gateway's relay sum; refusals change nothing.

        With ``device`` (a batch item) the message must be that device's, and not a relay sum.
        """
        with secagg_errors():
            msg = from_wire(data)
        if device is not None and (isinstance(msg, RelaySum) or msg.device_id != device):
            raise ValidationError(
                f"batch item of {device!r} carries a {msg.kind} of "
                f"{getattr(msg, 'device_id', getattr(msg, 'gateway_id', '?'))!r}: an item holds "
                "its own device's control message (relay sums go to POST .../secagg)"
            )
        digest = hashlib.sha256(data).digest()
        with self._lock:
            if digest in self._accepted:
                return m.Receipt(accepted=True, duplicate=True, reason="already received")
            if self.result is not None:
                raise ProtocolError(
                    f"the secure-aggregation session of {self.job_id}/{self.round_number} is "
                    f"over ({'abandoned' if self.result.abandoned else 'done'}); message refused"
                )
            if self._session is None:
                raise ProtocolError("the secure-aggregation session has not started yet")
            if isinstance(msg, RelaySum):
                if msg.gateway_id != gateway.name:
                    raise AuthorizationError(
                        f"gateway {gateway.name!r} may not send the sum of {msg.gateway_id!r}"
                    )
                foreign = [d for d in msg.contributors if self._gateway_of(d) != gateway.name]
                if foreign:
                    raise AuthorizationError(
                        f"relay sum of {gateway.name!r} lists devices it did not relay: "
                        f"{sorted(foreign)[:5]}"
                    )
            else:
                device = getattr(msg, "device_id", "")
                if self._gateway_of(device) != gateway.name:
                    raise AuthorizationError(
                        f"device {device!r} did not join this round through gateway "
                        f"{gateway.name!r}"
                    )
            with secagg_errors():
                self._session.receive(msg)
            self._accepted.add(digest)
            if isinstance(msg, RelaySum):
                self.relay_contributors[gateway.name] = msg.contributors
            if not self._session.waiting_for:
                self._advance(now)
        return m.Receipt(accepted=True)

    def _gateway_of(self, device: str) -> str | None:
        held = self._joins.get(device)
        return held.gateway if held else None

    def inbox(
        self, gateway: Identity, device: str, after: int, wait_s: float = 0.0
    ) -> m.SecAggInbox:
        """Messages for ``device`` from position ``after``; waits up to ``wait_s`` for news."""
        with self._lock:
            if self._gateway_of(device) != gateway.name:
                raise UnknownNameError(
                    f"device {device!r} has not joined {self.job_id}/{self.round_number} "
                    f"through gateway {gateway.name!r}"
                )
            box = self._inbox[device]
            if after > len(box):
                raise ValidationError(f"cursor {after} is past the {len(box)} messages sent")
            self._lock.wait_for(
                lambda: len(box) > after or self.result is not None,
                timeout=min(max(wait_s, 0.0), _MAX_WAIT_S),
            )
            return self._view(device, after)

    def _view(self, device: str, after: int) -> m.SecAggInbox:
        box = self._inbox[device][after:][:64]
        state = self._state()
        bindings: list[m.KeyBinding] = []
        session = self._session
        if session is not None and after == 0:
            bindings = [self._binding] + [
                self._joins[v].binding for v in session.graph.get(device, ())
            ]
        return m.SecAggInbox(
            state=state,
            messages=box,
            next=after + len(box),
            bindings=bindings,
            phase=session.phase.value if session is not None else "join",
            phase_deadline=self.phase_deadline,
            relay_deadline=self.relay_deadline,
            reason=self.result.reason if self.result is not None else "",
        )

    def site_inbox(self, gateway: Identity, after: int, wait_s: float = 0.0) -> m.SecAggSiteInbox:
        """Messages for every device that joined through ``gateway``, from site cursor ``after``;
        waits up to ``wait_s`` for news (long poll)."""
        with self._lock:
            log = self._site_log.setdefault(gateway.name, [])
            if after > len(log):
                raise ValidationError(f"cursor {after} is past the {len(log)} messages sent")
            self._lock.wait_for(
                lambda: len(log) > after or self.result is not None,
                timeout=min(max(wait_s, 0.0), _MAX_WAIT_S),
            )
            page = log[after:][: m.MAX_SITE_MESSAGES]
            bindings: list[m.KeyBinding] = []
            neighbours: dict[str, list[str]] = {}
            session = self._session
            if session is not None and after == 0:
                ours = [d for d, j in self._joins.items() if j.gateway == gateway.name]
                neighbours = {d: list(session.graph.get(d, ())) for d in ours}
                peers = sorted({v for vs in neighbours.values() for v in vs})
                bindings = [self._binding] + [self._joins[v].binding for v in peers]
            return m.SecAggSiteInbox(
                state=self._state(),
                messages=[m.SecAggSiteMessage(device_id=d, message=t) for d, t in page],
                next=after + len(page),
                bindings=bindings,
                neighbours=neighbours,
                phase=session.phase.value if session is not None else "join",
                phase_deadline=self.phase_deadline,
                relay_deadline=self.relay_deadline,
                reason=self.result.reason if self.result is not None else "",
            )

    def _state(self) -> Literal["joining", "running", "done", "abandoned"]:
        if self.result is not None:
            return "abandoned" if self.result.abandoned else "done"
        return "joining" if self._session is None else "running"

    @property
    def joined(self) -> frozenset[str]:
        """Devices whose key was accepted."""
        with self._lock:
            return frozenset(self._joins)
