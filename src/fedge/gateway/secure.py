"""Secure aggregation at the gateway: relay what it cannot read, sum what it must.

:class:`SecureRelay` serves the device side of the secagg routes for one site
(:class:`~fedge.transport.services.SecAggRelayService`) and talks to the coordinator through a
:class:`SecAggLink`, per site rather than per device:

- a **join** (the device's per-round Ed25519 key with its certificate's proof) is checked for
  binding (the device is the certificate's subject, it was handed the round, fresh nonce) and
  queued; the coordinator verifies the proof itself -- the gateway cannot forge or swap it;
- **control messages** (key advertisements, encrypted shares, unmask responses) are checked to
  come from the sending device and queued byte for byte; shares are sealed to peers and unmask
  responses to the coordinator, so the gateway holds nothing readable;
- queued joins and messages go up together (:mod:`fedge.gateway.batching`): ONE batch request
  when every device the site waits for has sent its message for the step, or after
  ``linger_s`` (dropouts). The coordinator checks each item on its own; a refused item is
  answered to its device at the device's next call;
- the **inbox**: ONE long poll per site and round reads all the site's messages
  (:mod:`fedge.gateway.fanout`) while the devices' own inbox requests wait for it; the gateway
  reads the round setups passing through (to open its relay session) and the relay deadline;
- **masked inputs** never leave the site one by one: a :class:`~fedge.secagg.RelaySession` sums
  them modulo 2^b, and when every device of the site in the session has sent its input, or at
  the coordinator's ``relay_deadline``, ONE :class:`~fedge.secagg.RelaySum` is put in the
  gateway's durable outbox (:mod:`fedge.gateway.relaysums`: kept until acknowledged or until
  the masked-input phase is over) and delivered from there -- also by a restarted gateway, once.
"""

from __future__ import annotations

import base64
import logging
import threading
from dataclasses import dataclass, field
from typing import Protocol

from fedge.device.backoff import Backoff
from fedge.errors import AuthorizationError, FedgeError, ProtocolError, UnavailableError
from fedge.gateway.batching import Pending, UpBatch
from fedge.gateway.fanout import SiteInbox
from fedge.gateway.relaysums import RelaySums
from fedge.gateway.rounds import RoundKey, RoundState
from fedge.gateway.service import GatewayService
from fedge.identity import Identity
from fedge.secagg import (
    KeyBundle,
    MaskedInput,
    RelaySession,
    RoundSetup,
    UnmaskRequest,
    from_wire,
)
from fedge.transport.errors import error_from_response, secagg_errors
from fedge.transport.messages import (
    ErrorBody,
    Receipt,
    SecAggBatch,
    SecAggBatchReceipt,
    SecAggInbox,
    SecAggItemResult,
    SecAggJoin,
    SecAggSiteInbox,
)

__all__ = ["SecAggLink", "SecureRelay"]

log = logging.getLogger(__name__)

_PROMPTS = (RoundSetup, KeyBundle, UnmaskRequest)  # each asks the device for one message


class SecAggLink(Protocol):
    """The coordinator's secure-aggregation uplink as a gateway sees it."""

    def relay_secagg_batch(
        self, job_id: str, round_number: int, batch: SecAggBatch
    ) -> SecAggBatchReceipt:
        """Forward many devices' joins and control messages."""
        ...

    def relay_secagg_site_inbox(
        self, job_id: str, round_number: int, after: int
    ) -> SecAggSiteInbox:
        """Messages for all of our devices, from the site cursor ``after`` (long poll)."""
        ...

    def relay_secagg_submit(self, job_id: str, round_number: int, payload: bytes) -> Receipt:
        """Deliver the site's relay sum."""
        ...


@dataclass
class _SiteRound:
    phase_timeout_s: float
    batch: UpBatch
    inbox: SiteInbox = field(default_factory=SiteInbox)
    joined: set[str] = field(default_factory=set)
    nonces: dict[str, str] = field(default_factory=dict)  # device -> its join's nonce
    owed: set[str] = field(default_factory=set)  # prompted; its answer not queued yet
    refused: dict[str, FedgeError] = field(default_factory=dict)  # told at its next call
    relay: RelaySession | None = None
    fetching: bool = False  # one request reads the site's inbox at a time
    flushing: bool = False  # one request sends the site's batch at a time
    formed: bool = False  # the relay sum is in the outbox (or there is nothing to send)


def _refusal(result: SecAggItemResult) -> FedgeError:
    """The error a device would have got had its item gone up alone."""
    if result.status == 200:
        return ProtocolError(f"the coordinator declined it: {result.reason}")
    body = ErrorBody(error=result.error or "refused", detail=result.reason).model_dump_json()
    return error_from_response(result.status, body.encode())


class SecureRelay:
    """One site's secure-aggregation relay (thread-safe)."""

    def __init__(
        self,
        service: GatewayService,
        link: SecAggLink,
        *,
        linger_s: float = 0.5,
        inbox_wait_s: float = 15.0,
    ) -> None:
        self.service = service
        self.link = link
        self.linger_s = linger_s  # how long a step's batch waits for a device that is missing
        self.inbox_wait_s = inbox_wait_s  # a device's inbox request waits this long at most
        self._lock = threading.Condition(threading.RLock())
        self._backoff = Backoff(base_s=0.5, cap_s=10.0)
        self.sums = RelaySums(service, link.relay_secagg_submit)  # in the durable outbox
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

    def _site_round(self, key: RoundKey, state: RoundState) -> _SiteRound:
        with self._lock:
            site = self._rounds.get(key)
            if site is None:
                assert state.assignment.secagg is not None
                timeout = float(state.assignment.secagg.params.get("phase_timeout_s", 10.0))
                linger = min(self.linger_s, timeout / 4)
                batch = UpBatch(linger, max_age_s=3 * timeout)
                site = self._rounds[key] = _SiteRound(timeout, batch)
            return site

    def _member(self, site: _SiteRound, device: str, key: RoundKey) -> None:
        refused = site.refused.get(device)
        if refused is not None:
            raise type(refused)(f"the coordinator refused it: {refused}")
        if device not in site.joined:
            raise ProtocolError(f"device {device!r} has not joined {key[0]}/{key[1]}")

    def _record(self, data: bytes) -> None:
        self.forwarded.append(data)
        del self.forwarded[:-1000]

    # -- SecAggRelayService ----------------------------------------------------------------------
    def secagg_join(
        self, peer: Identity, job_id: str, round_number: int, join: SecAggJoin
    ) -> Receipt:
        """Check a device's join is its own and fresh, then queue it for the site's batch."""
        device, state = self._holder(peer, job_id, round_number)
        if join.device_id != device or join.binding.name != device:
            raise AuthorizationError(
                f"device {device!r} may only join as itself, not as {join.device_id!r}"
            )
        if (join.job_id, join.round) != (job_id, round_number):
            raise ProtocolError(
                f"join bound to {join.job_id}/{join.round} was sent for {job_id}/{round_number}"
            )
        key = (job_id, round_number)
        site = self._site_round(key, state)
        with self._lock:
            if device in site.joined:
                if site.nonces.get(device) == join.nonce:
                    return Receipt(accepted=True, duplicate=True, reason="already joined")
                raise ProtocolError(f"device {device!r} already joined {job_id}/{round_number}")
            if site.relay is not None:
                raise ProtocolError(
                    f"the secure-aggregation session of {job_id}/{round_number} has started; "
                    "joins are closed (too late for this round)"
                )
            self.service.replay.check(device, join.nonce)
            # counted as one of this site's own from now on: the relay session opens over them
            site.joined.add(device)
            site.nonces[device] = join.nonce
            site.refused.pop(device, None)
            site.batch.add_join(join, self.service.clock())
        with self.service._lock:
            state.reported.add(device)  # its work is in: never hand it this round again
        self._flush_batch(key, site)
        return Receipt(accepted=True)

    def secagg_submit(
        self, peer: Identity, job_id: str, round_number: int, payload: bytes
    ) -> Receipt:
        """Queue a device's control message, or add its masked input to the site's sum."""
        device, state = self._holder(peer, job_id, round_number)
        with secagg_errors():
            msg = from_wire(payload)
        sender = getattr(msg, "device_id", None)
        if sender != device:
            raise AuthorizationError(f"device {device!r} may not send {msg.kind} as {sender!r}")
        key = (job_id, round_number)
        site = self._site_round(key, state)
        if not isinstance(msg, MaskedInput):
            with self._lock:
                self._member(site, device, key)
                if site.relay is not None:
                    with secagg_errors():
                        site.relay.forward(msg)  # session and site checks
                if not site.batch.add_message(device, payload, self.service.clock()):
                    return Receipt(accepted=True, duplicate=True, reason="already relayed")
                site.owed.discard(device)
            self._flush_batch(key, site)
            return Receipt(accepted=True)
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
        """The device's messages from the coordinator, read with the whole site's (long poll)."""
        device, state = self._holder(peer, job_id, round_number)
        key = (job_id, round_number)
        site = self._site_round(key, state)
        with self._lock:
            self._member(site, device, key)
            if site.inbox.has_news(device, after):
                return site.inbox.view(device, after)
            if site.fetching:  # another device's request is reading the site's inbox
                self._lock.wait(timeout=self.inbox_wait_s)
                self._member(site, device, key)
                return site.inbox.view(device, after)
            site.fetching, cursor = True, site.inbox.cursor
        try:
            page = self.link.relay_secagg_site_inbox(job_id, round_number, cursor)
        except FedgeError:
            with self._lock:
                site.fetching = False
                self._lock.notify_all()
            raise
        with self._lock:
            site.fetching = False
            try:
                self._fan_out(site, page)
            finally:
                self._lock.notify_all()
            view = site.inbox.view(device, after)
        self.flush_due()
        return view

    def _fan_out(self, site: _SiteRound, page: SecAggSiteInbox) -> None:
        """Take a site page: open the relay on the first round setup, note who owes an answer."""
        for device, text in site.inbox.merge(page, site.joined):
            with secagg_errors():
                msg = from_wire(base64.b64decode(text))
            if isinstance(msg, RoundSetup) and site.relay is None:
                site.relay = RelaySession(
                    self.service.gateway_id, msg.session_id, msg.params, site.joined
                )
            if isinstance(msg, _PROMPTS):
                site.owed.add(device)

    # -- the site's batch -------------------------------------------------------------------------
    def _waiting_for(self, key: RoundKey, site: _SiteRound) -> set[str]:
        """Devices whose next message the site's batch waits for (under the lock)."""
        if site.relay is not None or site.inbox.state != "joining":
            return set(site.owed)
        with self.service._lock:
            state = self.service._book.get(key)
            handed = set(state.handed) if state is not None else set()
        return (handed - site.joined - set(site.refused)) | site.owed

    def _flush_batch(self, key: RoundKey, site: _SiteRound) -> bool:
        """Send the site's queued items if they are due; False if nothing went up."""
        now = self.service.clock()
        with self._lock:
            if site.flushing or not site.batch.due(now, self._waiting_for(key, site)):
                return False
            site.flushing = True
            batch, joins, messages = site.batch.take()
        job_id, round_number = key
        try:
            receipt = self.link.relay_secagg_batch(job_id, round_number, batch)
            if (len(receipt.joins), len(receipt.messages)) != (len(joins), len(messages)):
                raise ProtocolError(
                    f"the coordinator answered {len(receipt.joins)}+{len(receipt.messages)} "
                    f"results for a batch of {len(joins)}+{len(messages)} items"
                )
        except UnavailableError as exc:
            with self._lock:
                site.flushing = False
                retry_at = now + self._backoff.next_delay()
                dropped = site.batch.put_back(joins + messages, now, retry_at)
            log.warning("secagg batch %s/%d kept for retry: %s", job_id, round_number, exc)
            for p in dropped:
                log.error("dropped %s's message for %s/%d: too old", p.device, *key)
            return False
        except FedgeError as exc:
            log.error("coordinator refused the secagg batch %s/%d: %s", job_id, round_number, exc)
            with self._lock:
                site.flushing = False
                for p in joins + messages:
                    self._refuse(site, p, exc)
            return False
        self._backoff.reset()
        self._record(batch.model_dump_json().encode())
        with self._lock:
            site.flushing = False
            retry: list[Pending] = []
            results = zip(joins + messages, receipt.joins + receipt.messages, strict=True)
            for p, result in results:
                if result.status >= 500:
                    retry.append(p)  # the coordinator failed on it, not refused it: again later
                elif not result.accepted:
                    self._refuse(site, p, _refusal(result))
            if retry:
                site.batch.put_back(retry, now, now + self._backoff.next_delay())
        log.info(
            "secagg batch %s/%d sent: %d join(s), %d message(s)",
            job_id, round_number, len(joins), len(messages),
        )  # fmt: skip
        return True

    @staticmethod
    def _refuse(site: _SiteRound, item: Pending, error: FedgeError) -> None:
        site.refused[item.device] = error
        if item.join is not None:
            site.joined.discard(item.device)  # not in the session: the relay must not wait for it
        log.warning("coordinator refused %s's secagg item: %s", item.device, error)

    # -- the site's sum -----------------------------------------------------------------------------
    def flush_due(self) -> int:
        """Send due batches, put complete or late relay sums in the outbox and deliver those
        due from it (also those a gateway restart left there); returns how many sums went up."""
        with self._lock:
            for key in [k for k, site in self._rounds.items() if self._forgotten(k, site)]:
                del self._rounds[key]  # the site's book forgot the round (10 min after it closed)
            pending = list(self._rounds.items())
        for key, site in pending:
            self._flush_batch(key, site)
            self._form_sum(key, site)
        return self.deliver_sums()

    def _forgotten(self, key: RoundKey, site: _SiteRound) -> bool:
        if site.fetching or site.flushing:
            return False
        with self.service._lock:
            return self.service._book.get(key) is None

    def _form_sum(self, key: RoundKey, site: _SiteRound) -> None:
        now = self.service.clock()
        with self._lock:
            relay = site.relay
            if relay is None or site.formed:
                return
            complete = bool(relay.contributors) and set(relay.contributors) >= site.joined
            deadline = site.inbox.relay_deadline
            if not (complete or (deadline is not None and now >= deadline)):
                return
            site.formed = True
            if self.sums.known(*key):
                return  # formed before this gateway restarted: the outbox delivers it
            relay_sum = relay.flush()
            if relay_sum is None:
                return  # nobody of ours got this far: nothing to send
            # kept until acknowledged, or until the coordinator has closed the masked-input
            # phase (half a phase after the relay deadline) and a phase more for a late receipt
            keep_until = (deadline if deadline is not None else now) + 1.5 * site.phase_timeout_s
            self.sums.put(*key, relay_sum, keep_until)

    def deliver_sums(self) -> int:
        """Deliver the relay sums due in the outbox; returns how many were acknowledged."""
        return self.sums.deliver_due()
