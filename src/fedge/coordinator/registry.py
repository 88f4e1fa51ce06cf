"""The model registry's rules, without I/O: version statuses and the release gate.

Every model version a job publishes starts as a **candidate**. Statuses and the moves allowed::

    candidate ──promote──▶ production ──(another is promoted)──▶ retired
        │                      │                                   │
        └──reject──▶ rejected  └──rollback──▶ rolled_back          └──(rollback)──▶ production

A job has at most one production version. Rolling back marks the production version
``rolled_back`` and returns the most recently retired one to production. ``rejected`` and
``rolled_back`` are final. Any other move is refused with :class:`~fedge.errors.ProtocolError`.

**Release gate**: a candidate is promoted automatically only if its evaluation is not worse than
production's by more than ``margin`` (accuracy, absolute); otherwise it stays a candidate and the
reason is recorded. With no production version yet, an evaluated candidate is promoted.

**Federated evaluation** (:mod:`fedge.aggregation.evaluation`): the devices of a round evaluate
its starting model on their own data before they train; when the round commits,
:func:`record_evaluation` puts their summed result on that version (the new version's parent)
-- so a version's federated metrics arrive one round after it was published, and the gate,
which decides at publication, goes by the centralised evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from fedge.aggregation.evaluation import EvaluationSums
from fedge.errors import ProtocolError

if TYPE_CHECKING:
    from fedge.coordinator.schema import ModelVersionRow

__all__ = [
    "STATUSES",
    "GateDecision",
    "ReleaseGate",
    "Status",
    "check_transition",
    "federated_sums",
    "record_evaluation",
]

Status = Literal["candidate", "production", "retired", "rejected", "rolled_back"]
STATUSES: tuple[Status, ...] = ("candidate", "production", "retired", "rejected", "rolled_back")
_ALLOWED: dict[str, frozenset[str]] = {
    "candidate": frozenset({"production", "rejected"}),
    "production": frozenset({"retired", "rolled_back"}),
    "retired": frozenset({"production"}),
    "rejected": frozenset(),
    "rolled_back": frozenset(),
}


def check_transition(current: str, new: str) -> None:
    """Raise :class:`ProtocolError` unless a version may move from ``current`` to ``new``."""
    if new not in _ALLOWED.get(current, frozenset()):
        allowed = sorted(_ALLOWED.get(current, frozenset())) or ["nothing: it is final"]
        raise ProtocolError(
            f"a {current} model version cannot become {new}; from {current} it can become:"
            f" {', '.join(allowed)}"
        )


@dataclass(frozen=True)
class GateDecision:
    """Whether the gate promotes a candidate, and why."""

    promote: bool
    reason: str


@dataclass(frozen=True)
class ReleaseGate:
    """Promote a candidate unless its ``metric`` is worse than production's by over ``margin``."""

    margin: float = 0.0  # how much worse than production a candidate may be (metric units)
    metric: str = "accuracy"
    higher_is_better: bool = True

    def decide(
        self, candidate: Mapping[str, float], production: Mapping[str, float] | None
    ) -> GateDecision:
        """The gate's decision for a candidate's metrics against production's (None: none)."""
        value = candidate.get(self.metric)
        if value is None:
            return GateDecision(False, f"the candidate has no {self.metric} evaluation")
        if production is None:
            return GateDecision(True, "no production version yet")
        reference = production.get(self.metric)
        if reference is None:
            return GateDecision(True, f"production has no {self.metric} evaluation")
        worse_by = (reference - value) if self.higher_is_better else (value - reference)
        if worse_by > self.margin:
            return GateDecision(
                False,
                f"{self.metric} {value:.4f} is worse than production's {reference:.4f} by"
                f" {worse_by:.4f}, over the margin {self.margin:.4f}",
            )
        return GateDecision(
            True, f"{self.metric} {value:.4f} vs production {reference:.4f} (margin {self.margin})"
        )


def federated_sums(row: ModelVersionRow) -> EvaluationSums:
    """The federated evaluation a version row records, as sums (zero when it has none)."""
    n = row.federated_examples or 0
    if not n or row.federated_accuracy is None or row.federated_loss is None:
        return EvaluationSums()
    return EvaluationSums(
        n, row.federated_accuracy * n, row.federated_loss * n, row.federated_devices or 0
    )


def record_evaluation(row: ModelVersionRow, sums: EvaluationSums) -> None:
    """Add devices' evaluation ``sums`` to what the version row records (example-weighted)."""
    total = federated_sums(row) + sums
    if not total.examples:
        return
    row.federated_accuracy = total.accuracy
    row.federated_loss = total.loss
    row.federated_examples = total.examples
    row.federated_devices = total.devices
