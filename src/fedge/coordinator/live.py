"""A round in flight at the coordinator: its state machine, running sums and hand-outs.

:class:`~fedge.coordinator.driver.RoundDriver` keeps at most one :class:`LiveRound` per job;
the request handlers read and update it under the driver's lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fedge.aggregation import WeightedMeanAccumulator
from fedge.aggregation.evaluation import EvaluationSums
from fedge.coordinator.rounds import Round
from fedge.coordinator.secure import SecureRound
from fedge.coordinator.selection import DIRECT
from fedge.telemetry.round_trace import RoundTrace

__all__ = ["LiveRound"]


@dataclass
class LiveRound:
    """A round in flight and its running sums."""

    machine: Round
    base_sha256: str
    acc: WeightedMeanAccumulator
    direct: WeightedMeanAccumulator
    direct_assigned: set[str] = field(default_factory=set)
    direct_submitted: set[str] = field(default_factory=set)
    handed: set[str] = field(default_factory=set)  # gateways given the assignment
    secure: SecureRound | None = None  # the SecAgg+ session, for jobs with secure aggregation
    planned_deadline: float = float("inf")  # still planned then (too few devices): abandoned
    trace: RoundTrace | None = None  # the round's spans (fedge.telemetry.round_trace)
    # devices' federated evaluation of base_sha256 (before training), summed over what was
    # accepted; recorded on that version when the round commits
    evaluation: EvaluationSums = field(default_factory=EvaluationSums)

    @property
    def number(self) -> int:
        """The round number."""
        return self.machine.number

    @property
    def traceparent(self) -> str | None:
        """The round's W3C trace context, for its assignments (tracing on or off)."""
        return self.trace.traceparent if self.trace is not None else None

    def direct_done(self, now: float) -> bool:
        """True when the direct pseudo-site has nothing more to deliver."""
        quota = self.machine.quotas.get(DIRECT, 0)
        if quota == 0 or (self.machine.training_deadline or 0.0) <= now:
            return True
        return len(self.direct_assigned) >= quota and self.direct_submitted >= self.direct_assigned
