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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from fedge.errors import ProtocolError

__all__ = ["STATUSES", "GateDecision", "ReleaseGate", "Status", "check_transition"]

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
