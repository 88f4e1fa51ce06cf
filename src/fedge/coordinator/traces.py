"""Where the coordinator keeps each round's trace context: the ``round_traces`` table.

One row per round (tracing on or off: every round has a trace id): its W3C ``traceparent``. The
driver writes it when it plans the round and reads it back after a restart, to add to the trace
of a round the restart abandoned (:func:`fedge.telemetry.round_trace.record_restart`); it also
tells an operator which trace is a round's, and which log lines are.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from fedge.coordinator.jobs import JobRuntime
from fedge.coordinator.schema import RoundTraceRow
from fedge.telemetry.round_trace import RoundTrace

__all__ = ["RoundTraces", "begin_round_trace", "metrics_attributes"]


def begin_round_trace(rt: JobRuntime, round_number: int) -> RoundTrace:
    """The root span of a round of ``rt`` just planned, with the job's shape as attributes."""
    spec = rt.spec
    trace = RoundTrace(
        rt.id,
        round_number,
        {
            "fedge.task": rt.task.name,
            "fedge.strategy": spec.strategy.name,
            "fedge.privacy": rt.privacy.mode,
            "fedge.secure_aggregation": spec.secure_aggregation is not None,
            "fedge.devices_per_round": spec.devices_per_round,
            "fedge.min_devices": spec.min_devices,
            "fedge.base_model": rt.model_sha256,
        },
    )
    trace.phase("planned")
    return trace


def metrics_attributes(participants: int, metrics: Mapping[str, float]) -> dict[str, float | int]:
    """A committed round's span attributes: participants and ``fedge.<metric>`` (accuracy, …)."""
    return {
        "fedge.participants": participants,
        **{f"fedge.{k}": float(v) for k, v in metrics.items()},
    }


class RoundTraces:
    """Save and look up rounds' ``traceparent`` (thread-safe; same database as the Store)."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def save(self, job_id: str, round_number: int, traceparent: str | None) -> None:
        """Record a round's trace context (nothing when tracing is off)."""
        if traceparent is None:
            return
        with self._sessions.begin() as s:
            s.merge(RoundTraceRow(job_id=job_id, round=round_number, traceparent=traceparent))

    def get(self, job_id: str, round_number: int) -> str | None:
        """The round's ``traceparent``, or None when it was not traced."""
        with self._sessions() as s:
            row = s.get(RoundTraceRow, (job_id, round_number))
            return row.traceparent if row is not None else None
