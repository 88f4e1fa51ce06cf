"""Health reports and refusals on their way upstream (device → gateway → coordinator).

A device reports the health check of a canary version it loaded, and -- always, canary or not --
every model it refuses: a release that does not verify (tampered, wrongly signed, signed by
another key, unsigned), a payload that does not load, a failed health check. A gateway reports
the models it refuses itself. Each is a :class:`~fedge.transport.messages.HealthReport` sent with
``POST /v1/jobs/{job}/health``; the coordinator records refusals in its audit log and registry
(:mod:`fedge.coordinator.refusals`).

:class:`ReportQueue` sends a report at once, keeps it while the receiver is unreachable
(:class:`~fedge.errors.UnavailableError`: the next :meth:`ReportQueue.flush` tries again), drops
it when the receiver refuses it for good (any other :class:`~fedge.errors.FedgeError`: stale, or
not needed), and sends the same report only once per process (a device polling a refused
manifest every few seconds reports it once). It holds at most ``limit`` reports; the oldest go
first.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Literal

from fedge.errors import FedgeError, HealthCheckError, SignatureError, UnavailableError
from fedge.transport.messages import HealthReport, Receipt

__all__ = ["Check", "ReportQueue", "ReportSink", "refusal_check", "refusal_report"]

log = logging.getLogger(__name__)

ReportSink = Callable[[str, HealthReport], Receipt]
Check = Literal["release", "load", "smoke", "accuracy"]


def refusal_check(exc: BaseException) -> Check:
    """The ``check`` a refusal failed: "release" for a signature or hash, the health check's
    own for a :class:`~fedge.errors.HealthCheckError`, else "load"."""
    if isinstance(exc, HealthCheckError) and exc.check in ("load", "smoke", "accuracy"):
        return exc.check  # type: ignore[return-value]
    if isinstance(exc, SignatureError):
        return "release"
    return "load"


def refusal_report(
    sha256: str, check: Check, reason: str, sequence: int | None = None
) -> HealthReport:
    """A refusal of model ``sha256`` (``sequence``: the manifest that named it, if one did)."""
    return HealthReport(
        sha256=sha256,
        sequence=sequence if sequence is not None and sequence >= 1 else None,
        check=check,
        reason=reason[:500],
    )


class ReportQueue:
    """Reports waiting for ``sink`` (None: kept until one is set); each report is sent once."""

    def __init__(self, sink: ReportSink | None = None, *, limit: int = 64) -> None:
        self.sink = sink
        self.limit = limit
        self._pending: deque[tuple[str, HealthReport]] = deque()
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()  # reports queued before
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one sender at a time
        self.sent = 0  # delivered (accepted or not) by this process
        self.dropped = 0  # refused by the receiver, or pushed out by newer ones

    def put(self, job_id: str, report: HealthReport) -> bool:
        """Queue ``report`` (False: the same one was queued before) and try to send."""
        key = (job_id, report.model_dump_json())
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            while len(self._seen) > 16 * self.limit:
                self._seen.popitem(last=False)
            self._pending.append((job_id, report))
            while len(self._pending) > self.limit:
                self._pending.popleft()
                self.dropped += 1
        self.flush()
        return True

    def pending(self) -> int:
        """Reports not delivered yet."""
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Send what is pending, oldest first; returns how many are left (receiver down)."""
        with self._flushing:
            while True:
                with self._lock:
                    if not self._pending or self.sink is None:
                        return len(self._pending)
                    job_id, report = self._pending[0]
                    sink = self.sink
                what = f"{report.check} on {report.sha256[:12]} ({job_id})"
                try:
                    receipt = sink(job_id, report)
                except UnavailableError as exc:  # the receiver is unreachable: try again later
                    log.warning("report %s not delivered yet: %s", what, exc)
                    with self._lock:
                        return len(self._pending)
                except FedgeError as exc:  # stale or not needed: dropped
                    log.info("report %s dropped: %s", what, exc)
                    with self._lock:
                        self.dropped += 1
                else:
                    log.info("reported %s: %s", what, receipt.reason or "accepted")
                    with self._lock:
                        self.sent += 1
                with self._lock:
                    if self._pending and self._pending[0][1] is report:
                        self._pending.popleft()
