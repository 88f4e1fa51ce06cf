"""Secure aggregation at the gateway: relay what it cannot read, sum what it must.

:class:`SecureRelay` serves the device side of the secagg routes for one site
(:class:`~fedge.transport.services.SecAggRelayService`) and talks to the coordinator through a
:class:`SecAggLink`:

- a **join** (the device's per-round Ed25519 key with its certificate's proof) is checked for
  binding (the device is the certificate's subject, it was handed the round, fresh nonce) and
  forwarded; the coordinator verifies the proof itself — the gateway cannot forge or swap it;
- **control messages** (key advertisements, encrypted shares, unmask responses) are forwarded
  byte for byte after checking they come from the sending device; shares are sealed to peers and
  unmask responses to the coordinator, so the gateway holds nothing readable;
- **masked inputs** never leave the site one by one: a :class:`~fedge.secagg.RelaySession` sums
  them modulo 2^b, and ONE :class:`~fedge.secagg.RelaySum` goes up when every device of the site
  in the session has sent its input or at the coordinator's ``relay_deadline``;
- the **inbox** is fetched from the coordinator per device (long poll); the gateway reads the
  round setups passing through (session id and parameters, to open its relay session) and the
  relay deadline.
"""

from __future__ import annotations

import base64
import logging
import threading
from dataclasses import dataclass, field
from typing import Protocol

from fedge.errors import AuthorizationError, FedgeError, ProtocolError, UnavailableError
from fedge.gateway.rounds import RoundKey, RoundState
from fedge.gateway.service import GatewayService
from fedge.identity import Identity
from fedge.secagg import MaskedInput, RelaySession, RoundSetup, from_wire, to_wire
from fedge.transport.errors import secagg_errors
from fedge.transport.messages import Receipt, SecAggInbox, SecAggJoin

__all__ = ["SecAggLink", "SecureRelay"]

log = logging.getLogger(__name__)


class SecAggLink(Protocol):
    """The coordinator's secure-aggregation uplink as a gateway sees it."""

    def relay_secagg_join(self, job_id: str, round_number: int, join: SecAggJoin) -> Receipt:
        """Forward a device's join."""
        ...

    def relay_secagg_submit(self, job_id: str, round_number: int, payload: bytes) -> Receipt:
        """Forward a device's message or deliver the relay sum."""
        ...

    def relay_secagg_inbox(
        self, job_id: str, round_number: int, device_id: str, after: int
    ) -> SecAggInbox:
        """Messages for one of our devices."""
        ...


@dataclass
class _SiteRound:
    joined: set[str] = field(default_factory=set)
    relay: RelaySession | None = None
    relay_deadline: float | None = None
    sum_wire: bytes | None = None  # the relay sum, once formed (kept until delivered)
    delivered: bool = False
    sending: bool = False  # one thread delivers the sum at a time


class SecureRelay:
    """One site's secure-aggregation relay (thread-safe)."""

    def __init__(self, service: GatewayService, link: SecAggLink) -> None:
        self.service = service
        self.link = link
        self._lock = threading.RLock()
        self._rounds: dict[RoundKey, _SiteRound] = {}
        self.forwarded: list[bytes] = []  # what went up, for audits and tests (bounded below)

    # -- checks ---------------------------------------------------------------------------------
    def _holder(self, peer: Identity, job_id: str, round_number: int) -> tuple[str, RoundState]:
        device = self.service._admit(peer)
        with self.service._lock:
            state = self.service._book.get((job_id, round_number))
        if state is None or state.assignment.secagg is None:
            raise ProtocolError(
                f"round {job_id}/{round_number} has no secure aggregation at this gateway "
                "(unknown, stale or plain round)"
            )
        if device not in state.handed:
            raise AuthorizationError(
                f"device {device!r} was not handed round {job_id}/{round_number}; check in first"
            )
        return device, state

    def _site_round(self, key: RoundKey) -> _SiteRound:
        with self._lock:
            return self._rounds.setdefault(key, _SiteRound())

    def _record(self, data: bytes) -> None:
        self.forwarded.append(data)
        del self.forwarded[:-1000]

    # -- SecAggRelayService ----------------------------------------------------------------------
    def secagg_join(
        self, peer: Identity, job_id: str, round_number: int, join: SecAggJoin
    ) -> Receipt:
        """Check a device's join is its own and fresh, then forward it."""
        device, state = self._holder(peer, job_id, round_number)
        if join.device_id != device or join.binding.name != device:
            raise AuthorizationError(
                f"device {device!r} may only join as itself, not as {join.device_id!r}"
            )
        if (join.job_id, join.round) != (job_id, round_number):
            raise ProtocolError(
                f"join bound to {join.job_id}/{join.round} was sent for {job_id}/{round_number}"
            )
        site = self._site_round((job_id, round_number))
        with self._lock:
            fresh = device not in site.joined
            if fresh:
                self.service.replay.check(device, join.nonce)
                # Before forwarding: the session may start the moment the coordinator has it,
                # and this site's relay must then count the device as one of its own.
                site.joined.add(device)
        try:
            receipt = self.link.relay_secagg_join(job_id, round_number, join)
        except FedgeError:
            with self._lock:
                if fresh and site.relay is None:
                    site.joined.discard(device)
            raise
        self._record(join.model_dump_json().encode())
        with self.service._lock:
            state.reported.add(device)  # its work is in: never hand it this round again
        return receipt

    def secagg_submit(
        self, peer: Identity, job_id: str, round_number: int, payload: bytes
    ) -> Receipt:
        """Forward a device's control message, or add its masked input to the site's sum."""
        device, _ = self._holder(peer, job_id, round_number)
        with secagg_errors():
            msg = from_wire(payload)
        sender = getattr(msg, "device_id", None)
        if sender != device:
            raise AuthorizationError(f"device {device!r} may not send {msg.kind} as {sender!r}")
        key = (job_id, round_number)
        site = self._site_round(key)
        if not isinstance(msg, MaskedInput):
            with self._lock:
                relay = site.relay
            if relay is not None:
                with secagg_errors():
                    relay.forward(msg)  # session and site checks
            receipt = self.link.relay_secagg_submit(job_id, round_number, payload)
            self._record(payload)
            return receipt
        with self._lock:
            if site.relay is None:
                raise ProtocolError("masked input before the round setup reached this gateway")
            if device in site.relay.contributors:
                return Receipt(accepted=True, duplicate=True, reason="already summed")
            with secagg_errors():
                site.relay.receive(msg)
        log.info("summed masked input of %s for %s/%d", device, job_id, round_number)
        self.flush_due()
        return Receipt(accepted=True)

    def secagg_inbox(
        self, peer: Identity, job_id: str, round_number: int, after: int
    ) -> SecAggInbox:
        """The device's messages from the coordinator; opens the relay on the first setup."""
        device, _ = self._holder(peer, job_id, round_number)
        site = self._site_round((job_id, round_number))
        with self._lock:
            if device not in site.joined:
                raise ProtocolError(f"device {device!r} has not joined {job_id}/{round_number}")
        box = self.link.relay_secagg_inbox(job_id, round_number, device, after)
        with self._lock:
            if box.relay_deadline is not None:
                site.relay_deadline = box.relay_deadline
            if site.relay is None:
                for item in box.messages:
                    msg = from_wire(base64.b64decode(item))
                    if isinstance(msg, RoundSetup):
                        site.relay = RelaySession(
                            self.service.gateway_id, msg.session_id, msg.params, site.joined
                        )
                        break
        self.flush_due()
        return box

    # -- the site's sum -----------------------------------------------------------------------------
    def flush_due(self) -> int:
        """Form and deliver every relay sum that is complete or due; returns how many went up."""
        now = self.service.clock()
        sent = 0
        with self._lock:
            pending = list(self._rounds.items())
        for (job_id, round_number), site in pending:
            with self._lock:
                relay = site.relay
                if relay is None or site.delivered or site.sending:
                    continue
                if site.sum_wire is None:
                    complete = bool(relay.contributors) and set(relay.contributors) >= site.joined
                    late = site.relay_deadline is not None and now >= site.relay_deadline
                    if not (complete or late):
                        continue
                    relay_sum = relay.flush()
                    if relay_sum is None:
                        site.delivered = True  # nobody of ours got this far: nothing to send
                        continue
                    site.sum_wire = to_wire(relay_sum)
                data = site.sum_wire
                site.sending = True
            try:
                with self.service.upload_span("fedge.gateway.relay_sum", job_id, round_number):
                    self.link.relay_secagg_submit(job_id, round_number, data)
            except UnavailableError as exc:
                log.warning("relay sum %s/%d not delivered yet: %s", job_id, round_number, exc)
                with self._lock:
                    site.sending = False
                continue
            except FedgeError as exc:
                log.error("coordinator refused relay sum %s/%d: %s", job_id, round_number, exc)
            with self._lock:
                site.delivered, site.sending = True, False
            self._record(data)
            sent += 1
            log.info(
                "relay sum %s/%d sent: %d device(s)", job_id, round_number, len(relay.contributors)
            )
        return sent
