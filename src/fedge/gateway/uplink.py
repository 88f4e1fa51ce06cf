"""The gateway's upstream loops: check in for assignments, and deliver the outbox.

- :meth:`Uplink.checkin_once` sends a ``GatewayCheckIn`` (with the labels of devices the
  coordinator should hear about, for jobs' selectors), merges the answer into the service (the
  rounds' quotas, and the devices revoked through the admin API, refused from then on),
  pre-fetches the models of new rounds into the site cache (once for the whole site), and closes
  rounds that are complete or out of time (their partials go into the outbox).
- :meth:`Uplink.send_once` delivers every pending partial. A ``Receipt`` (accepted or
  duplicate) marks it delivered; a refusal that retrying cannot fix (stale round, bad payload)
  discards it with the reason; an unreachable or failing coordinator leaves it for the next
  try, with exponential backoff and full jitter. The outbox dedups by key and the coordinator
  by (job, round, gateway), so a partial is counted exactly once however often the link drops.
  Relay sums of secure rounds share the outbox; :class:`~fedge.gateway.secure.SecureRelay`
  delivers those, the same way.

:meth:`Uplink.start` runs both loops in daemon threads until the given event is set, and with
secure aggregation a third that sends the relay's due batches and relay sums every
``secure_interval_s``.
"""

from __future__ import annotations

import base64
import logging
import threading
from typing import TYPE_CHECKING, Protocol

from fedge.device.backoff import Backoff
from fedge.errors import FedgeError, UnavailableError
from fedge.gateway.service import GatewayService
from fedge.transport.messages import (
    DeviceCertificates,
    DeviceRegistration,
    GatewayAssignments,
    GatewayCheckIn,
    Receipt,
)

if TYPE_CHECKING:
    from fedge.gateway.secure import SecureRelay

__all__ = ["CoordinatorLink", "Uplink"]

log = logging.getLogger(__name__)

_PARTIAL = "partial/"  # the outbox keys this loop delivers (fedge.gateway.service.partial_key)


class CoordinatorLink(Protocol):
    """The coordinator's uplink API as a gateway sees it (client side of ``UplinkService``)."""

    def gateway_checkin(self, request: GatewayCheckIn) -> GatewayAssignments:
        """Report the site; receive the quotas of the open rounds."""
        ...

    def model(self, sha256: str) -> bytes:
        """Download a model payload."""
        ...

    def submit_partial(self, job_id: str, round_number: int, payload: bytes) -> Receipt:
        """Upload one round's partial sum."""
        ...

    def register_devices(self, request: DeviceCertificates) -> DeviceRegistration:
        """Send devices' certificates so the coordinator knows their site."""
        ...


class Uplink:
    """Drives a :class:`GatewayService` against the coordinator."""

    def __init__(
        self,
        service: GatewayService,
        link: CoordinatorLink,
        *,
        checkin_interval_s: float = 5.0,
        send_interval_s: float = 1.0,
        backoff_cap_s: float = 30.0,
        secure: SecureRelay | None = None,
        secure_interval_s: float = 0.1,
    ) -> None:
        self.service = service
        self.link = link
        self.secure = secure  # delivers relay sums that fall due (secure aggregation)
        self.checkin_interval_s = checkin_interval_s
        self.send_interval_s = send_interval_s
        self.secure_interval_s = secure_interval_s
        self._checkin_backoff = Backoff(base_s=0.5, cap_s=backoff_cap_s)
        self._send_backoff = Backoff(base_s=0.5, cap_s=backoff_cap_s)
        self.delivered = 0
        self.discarded = 0

    def checkin_once(self) -> float:
        """One check-in; returns the seconds until the next one."""
        request = self.service.checkin_request()
        try:
            answer = self.link.gateway_checkin(request)
        except FedgeError as exc:
            log.warning("gateway check-in failed: %s", exc)
            self.service.close_due_rounds()  # deadlines pass whether the uplink is up or not
            return self._checkin_backoff.next_delay()
        self._checkin_backoff.reset()
        self.service.labels_sent(request)  # the coordinator has its devices' labels now
        self.service.cache.flush_reports()  # refusals held while the uplink was down
        new = self.service.apply_assignments(answer)  # and the revoked devices are refused
        for a in new:
            with self.service.in_round(a.job_id, a.round):  # its log lines carry the round's ids
                log.info("new round %s/%d, quota %d", a.job_id, a.round, a.quota)
                try:
                    self.service.cache.get(a.model_sha256, job_id=a.job_id)
                except FedgeError as exc:
                    log.warning("could not pre-fetch model %s: %s", a.model_sha256, exc)
        if new:
            self.service.long_poll.notify()  # held check-ins: the round's model is here now
        self.register_once()  # devices seen since the last check-in: their sites, ahead of time
        self.service.close_due_rounds()
        return self._next_wake(min(self.checkin_interval_s, max(answer.retry_after_s, 0.2)))

    def _next_wake(self, interval: float) -> float:
        close_at = self.service.next_close_at()
        if close_at is None:
            return interval
        return max(0.05, min(interval, close_at - self.service.clock() + 0.01))

    def register_once(self) -> bool:
        """Send the certificates of devices the coordinator does not know yet; False if it could
        not be reached (partials naming them would be refused, so they wait too)."""
        while pending := self.service.roster.unregistered_certificates():
            request = DeviceCertificates(
                certificates=[base64.b64encode(der).decode() for der in pending.values()]
            )
            try:
                answer = self.link.register_devices(request)
            except UnavailableError as exc:
                log.info("coordinator unavailable, %d device(s) not registered yet: %s",
                         len(pending), exc)  # fmt: skip
                return False
            except FedgeError as exc:
                log.error("coordinator refused to register devices %s: %s", sorted(pending), exc)
                self.service.roster.mark_registered(pending)  # asking again would be refused again
                continue
            for device, why in answer.refused.items():
                log.error("coordinator refused device %s: %s", device, why)
            self.service.roster.mark_registered(pending)
        return True

    def send_once(self) -> bool:
        """Try to deliver every due partial; False if some are left for a later retry."""
        self.service.close_due_rounds()
        if self.secure is not None:
            self.secure.flush_due()
        outbox = self.service.outbox
        now = self.service.clock()
        if outbox.due(now, prefix=_PARTIAL) and not self.register_once():
            return False
        for item in outbox.due(now, prefix=_PARTIAL):
            _, job, rnd = item.key.split("/", 2)
            with self.service.in_round(job, int(rnd)):  # its log lines carry the round's ids
                if not self._send(item.key, job, int(rnd), item.payload, now):
                    break  # the link is down: the others would fail the same way
        for item in outbox.expire(now):
            log.error("%s was never acknowledged; dropped after its retention", item.key)
        return outbox.pending() == 0

    def _send(self, key: str, job: str, rnd: int, payload: bytes, now: float) -> bool:
        """Deliver one partial; False when the coordinator is unreachable (kept for a retry)."""
        outbox = self.service.outbox
        try:
            with self.service.upload_span("fedge.gateway.partial", job, rnd):
                receipt = self.link.submit_partial(job, rnd, payload)
        except UnavailableError as exc:
            outbox.mark_failed(key, now + self._send_backoff.next_delay(), str(exc))
            log.info("coordinator unavailable, partial %s kept for retry: %s", key, exc)
            return False
        except FedgeError as exc:
            log.error(
                "coordinator refused partial %s for good; it is not sent again, so the site's "
                "updates in it are lost for that round (later rounds are not affected): %s",
                key, exc,
            )  # fmt: skip
            outbox.mark_delivered(key)  # a tombstone: never sent again
            self.discarded += 1
            return True
        outbox.mark_delivered(key)
        if receipt.accepted:
            self.delivered += 1
            self._send_backoff.reset()
            duplicate = " (duplicate)" if receipt.duplicate else ""
            log.info("partial %s delivered%s", key, duplicate)
        else:
            log.error("coordinator declined partial %s: %s", key, receipt.reason)
            self.discarded += 1
        return True

    def _loop(self, stop: threading.Event, once: str) -> None:
        while not stop.is_set():
            try:
                if once == "checkin":
                    delay = self.checkin_once()
                elif once == "secure":
                    assert self.secure is not None
                    self.secure.flush_due()
                    delay = self.secure_interval_s
                else:
                    self.send_once()
                    delay = self.send_interval_s
            except Exception:  # keep the loop alive; the error is logged with its traceback
                log.exception("gateway %s loop failed; retrying", once)
                delay = self.send_interval_s
            stop.wait(delay)

    def start(self, stop: threading.Event) -> list[threading.Thread]:
        """Run the check-in and sender loops (and the relay's) in daemon threads until ``stop``."""
        loops = ("checkin", "sender") + (("secure",) if self.secure is not None else ())
        threads = [
            threading.Thread(
                target=self._loop, args=(stop, name), name=f"uplink-{name}", daemon=True
            )
            for name in loops
        ]
        for t in threads:
            t.start()
        return threads
