"""A gateway's relay sums in its durable outbox: put once, delivered once, also after a restart.

A secure round's :class:`~fedge.secagg.RelaySum` (the site's masked inputs summed modulo 2^b)
goes into the same SQLite outbox as plain partials (:mod:`fedge.storage.outbox`), under the key
:func:`relay_sum_key` -- one per (job, round, gateway), so a sum formed twice (say, by a gateway
that restarted) is queued once. :meth:`RelaySums.deliver_due` sends what is due: an
acknowledgement (accepted, or a duplicate of a sum the coordinator already holds: it dedups by
the message's digest) leaves a tombstone; an unreachable coordinator leaves it for a retry with
backoff until the item's deadline (the end of the masked-input phase); a refusal discards it
with the reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from fedge.device.backoff import Backoff
from fedge.errors import FedgeError, UnavailableError
from fedge.gateway.service import GatewayService
from fedge.secagg import RelaySum, from_wire, to_wire
from fedge.transport.messages import Receipt

__all__ = ["RELAY_SUM_PREFIX", "RelaySums", "relay_sum_key"]

log = logging.getLogger(__name__)

RELAY_SUM_PREFIX = "relay-sum/"
Submit = Callable[[str, int, bytes], Receipt]


def relay_sum_key(job_id: str, round_number: int, gateway_id: str) -> str:
    """The outbox key of a round's relay sum: one per (job, round, gateway)."""
    return f"{RELAY_SUM_PREFIX}{job_id}/{round_number}/{gateway_id}"


class RelaySums:
    """The relay sums of one gateway, in its outbox (thread-safe)."""

    def __init__(
        self, service: GatewayService, submit: Submit, backoff: Backoff | None = None
    ) -> None:
        self.service = service
        self.submit = submit  # the coordinator's POST .../secagg
        self.delivered: list[bytes] = []  # what went up, for audits and tests (bounded below)
        self._sending = threading.Lock()  # one thread delivers at a time
        self._backoff = backoff or Backoff(base_s=0.5, cap_s=10.0)

    def key(self, job_id: str, round_number: int) -> str:
        """This gateway's outbox key for the round."""
        return relay_sum_key(job_id, round_number, self.service.gateway_id)

    def known(self, job_id: str, round_number: int) -> bool:
        """True if the round's sum was ever queued here (pending, delivered or given up)."""
        return self.service.outbox.has(self.key(job_id, round_number))

    def put(self, job_id: str, round_number: int, relay_sum: RelaySum, keep_until: float) -> bool:
        """Queue the round's sum until acknowledged or ``keep_until``; False if queued before."""
        fresh = self.service.outbox.put(
            self.key(job_id, round_number),
            f"/v1/gateway/jobs/{job_id}/rounds/{round_number}/secagg",
            to_wire(relay_sum),
            deadline=keep_until,
        )
        if fresh:
            log.info(
                "relay sum %s/%d formed: %d device(s)",
                job_id, round_number, len(relay_sum.contributors),
            )  # fmt: skip
        return fresh

    def deliver_due(self) -> int:
        """Deliver the sums due in the outbox; returns how many were acknowledged."""
        if not self._sending.acquire(blocking=False):
            return 0  # another thread is delivering them
        try:
            return self._deliver()
        finally:
            self._sending.release()

    def _deliver(self) -> int:
        outbox, now, sent = self.service.outbox, self.service.clock(), 0
        for item in outbox.due(now, prefix=RELAY_SUM_PREFIX):
            job_id, number, _ = item.key[len(RELAY_SUM_PREFIX) :].split("/")
            round_number = int(number)
            try:
                with self.service.upload_span("fedge.gateway.relay_sum", job_id, round_number):
                    receipt = self.submit(job_id, round_number, item.payload)
            except UnavailableError as exc:
                outbox.mark_failed(item.key, now + self._backoff.next_delay(), str(exc))
                log.warning("relay sum %s not delivered yet, kept for retry: %s", item.key, exc)
                break  # the link is down: the others would fail the same way
            except FedgeError as exc:
                log.error("coordinator refused relay sum %s: %s", item.key, exc)
                outbox.discard(item.key, str(exc))
                continue
            outbox.mark_delivered(item.key)
            self._backoff.reset()
            self.delivered.append(item.payload)
            del self.delivered[:-100]
            if not receipt.accepted:
                log.error("coordinator declined relay sum %s: %s", item.key, receipt.reason)
                continue
            sent += 1
            contributors = getattr(from_wire(item.payload), "contributors", ())
            log.info(
                "relay sum %s/%d sent: %d device(s)%s", job_id, round_number, len(contributors),
                " (duplicate)" if receipt.duplicate else "",
            )  # fmt: skip
        return sent
