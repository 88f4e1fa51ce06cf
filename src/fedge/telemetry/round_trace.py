"""A round is one trace: the coordinator's root span for it and a child span per phase.

:class:`RoundTrace` starts ``fedge.round`` (always a new trace, whatever is current) when a round
is planned, with the job, round, task, strategy, privacy mode and secure-aggregation flag as
attributes. :meth:`RoundTrace.phase` ends the running phase span and starts the next
(``fedge.round.planned`` → ``configuring`` → ``training`` → ``aggregating``), each a child of the
root; :meth:`RoundTrace.end` ends both with the outcome (``committed``, or ``abandoned`` with the
reason as an error status). :attr:`RoundTrace.traceparent` is what the round's assignments carry,
so gateways' and devices' work joins the trace, and what the coordinator keeps in its database:
after a restart :func:`record_restart` adds a span to the trace of a round that was in flight.

While tracing is off nothing here is recorded, but the round still has a trace id (the root is a
non-recording span with fresh W3C ids, see :mod:`fedge.telemetry.tracing`): ``traceparent`` is
set, the assignments carry it, and :meth:`RoundTrace.active` stamps log records with the job,
the round and that trace id.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.trace import Span, Status, StatusCode

from fedge.telemetry.tracing import Attributes, activate, start_span, traceparent_of

__all__ = ["ROUND_SPAN", "RoundTrace", "record_finished", "record_restart"]

ROUND_SPAN = "fedge.round"


class RoundTrace:
    """One round's root span and its current phase span (not thread-safe: the driver locks)."""

    def __init__(self, job_id: str, round_number: int, attributes: Attributes | None = None):
        self.job_id, self.round = job_id, round_number
        self._ids: dict[str, str | int] = {"fedge.job": job_id, "fedge.round": round_number}
        self.root: Span = start_span(
            ROUND_SPAN, root=True, attributes={**self._ids, **(attributes or {})}
        )
        self.traceparent = traceparent_of(self.root)  # set whether or not tracing is on
        self._phase: Span | None = None
        self.ended = False

    def phase(self, name: str, attributes: Attributes | None = None) -> None:
        """End the running phase span and start ``fedge.round.<name>``."""
        if self.ended:
            return
        if self._phase is not None:
            self._phase.end()
        self._phase = start_span(
            f"{ROUND_SPAN}.{name}",
            traceparent=self.traceparent,
            attributes={**self._ids, "fedge.phase": name, **(attributes or {})},
        )

    def end(self, outcome: str, reason: str = "", attributes: Attributes | None = None) -> None:
        """End the phase and the round: ``outcome`` committed (OK) or abandoned (ERROR, reason)."""
        if self.ended:
            return
        self.ended = True
        if self._phase is not None:
            self._phase.end()
        self.root.set_attributes({"fedge.outcome": outcome, **(attributes or {})})
        if reason:
            self.root.set_attribute("fedge.reason", reason)
        ok = outcome == "committed"
        self.root.set_status(Status(StatusCode.OK) if ok else Status(StatusCode.ERROR, reason))
        self.root.end()

    @contextmanager
    def active(self) -> Iterator[None]:
        """Make the running phase (else the root) current and stamp logs with job and round."""
        with activate(self._phase or self.root, self.job_id, self.round):
            yield


def record_finished(
    name: str,
    started_s: float,
    ended_s: float,
    attributes: Attributes | None = None,
    *,
    traceparent: str | None = None,
) -> None:
    """Record a span that already happened (unix seconds), e.g. a secure-aggregation phase known
    once it closes: a child of ``traceparent``'s span, else of the current one."""
    s = start_span(
        name, traceparent=traceparent, attributes=attributes, start_time=int(started_s * 1e9)
    )
    s.end(end_time=int(max(ended_s, started_s) * 1e9))


def record_restart(traceparent: str | None, job_id: str, round_number: int, reason: str) -> None:
    """Add ``fedge.round.restarted`` to the trace of a round a restart abandoned (its root span
    died with the old process; the trace goes on under the same trace id)."""
    if traceparent is None:
        return
    s = start_span(
        f"{ROUND_SPAN}.restarted",
        traceparent=traceparent,
        attributes={"fedge.job": job_id, "fedge.round": round_number, "fedge.reason": reason},
    )
    s.set_status(Status(StatusCode.ERROR, reason))
    s.end()
