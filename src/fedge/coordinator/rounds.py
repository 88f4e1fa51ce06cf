"""The round state machine, sans I/O: which phase a round is in and what may happen next.

::

    planned ──open──▶ configuring ──start_training──▶ training ──begin_aggregation──▶ aggregating
       │                   │                              │                              │
       └───────────────────┴──────────── abandon ─────────┴──────────────┐         commit│
                                                                         ▼               ▼
                                                                     abandoned       committed

- **planned**: the round exists; it waits for enough eligible devices to hand quotas out — at
  most a whole round's time (training + report deadline), then the driver abandons it.
- **configuring**: quotas are fixed and offered; gateways and direct devices fetch assignments.
- **training**: at least one site took work; partial sums and updates are accepted.
- **aggregating**: no more contributions; the server step, evaluation and publication run.
- **committed** / **abandoned**: terminal.

Every other transition raises :class:`~fedge.errors.ProtocolError`. Clocks are passed in
(``now``), never read: :meth:`Round.due` says whether the deadlines ask for aggregation. Each
transition is reported to :func:`fedge.telemetry.metrics.record_round_transition` (phase and
round durations, rounds committed and abandoned; a no-op unless the process serves metrics).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from fedge.errors import ProtocolError
from fedge.telemetry.metrics import record_round_transition

__all__ = ["TERMINAL", "TRANSITIONS", "Round", "RoundState"]


class RoundState(StrEnum):
    """The phase of a round."""

    PLANNED = "planned"
    CONFIGURING = "configuring"
    TRAINING = "training"
    AGGREGATING = "aggregating"
    COMMITTED = "committed"
    ABANDONED = "abandoned"


TRANSITIONS: Mapping[RoundState, frozenset[RoundState]] = {
    RoundState.PLANNED: frozenset({RoundState.CONFIGURING, RoundState.ABANDONED}),
    RoundState.CONFIGURING: frozenset({RoundState.TRAINING, RoundState.ABANDONED}),
    RoundState.TRAINING: frozenset({RoundState.AGGREGATING, RoundState.ABANDONED}),
    RoundState.AGGREGATING: frozenset({RoundState.COMMITTED, RoundState.ABANDONED}),
    RoundState.COMMITTED: frozenset(),
    RoundState.ABANDONED: frozenset(),
}
TERMINAL = frozenset({RoundState.COMMITTED, RoundState.ABANDONED})


@dataclass
class Round:
    """One attempt at a round of a job: its phase, deadlines, quotas and who has reported."""

    job_id: str
    number: int
    state: RoundState = RoundState.PLANNED
    quotas: dict[str, int] = field(default_factory=dict)  # site key (gateway id) → devices
    training_deadline: float | None = None
    report_deadline: float | None = None
    reported: set[str] = field(default_factory=set)  # site keys whose partial is in
    reason: str = ""

    @property
    def terminal(self) -> bool:
        """True once committed or abandoned."""
        return self.state in TERMINAL

    @property
    def accepting(self) -> bool:
        """True while contributions (partials, updates) may be folded in."""
        return self.state in (RoundState.CONFIGURING, RoundState.TRAINING)

    @property
    def assigned(self) -> frozenset[str]:
        """Site keys with a quota above zero."""
        return frozenset(k for k, q in self.quotas.items() if q > 0)

    def _go(self, target: RoundState) -> None:
        if target not in TRANSITIONS[self.state]:
            raise ProtocolError(
                f"round {self.number} of job {self.job_id!r} is {self.state}; it cannot become "
                f"{target} (allowed next: {', '.join(sorted(TRANSITIONS[self.state])) or 'none'})"
            )
        previous, self.state = self.state, target
        record_round_transition(self.job_id, self.number, previous.value, target.value)

    def open(
        self, quotas: Mapping[str, int], training_deadline: float, report_deadline: float
    ) -> None:
        """planned → configuring: fix the quotas and the deadlines."""
        if report_deadline < training_deadline:
            raise ProtocolError("the report deadline must not be before the training deadline")
        if not any(q > 0 for q in quotas.values()):
            raise ProtocolError(f"round {self.number} cannot open with no quota for any site")
        self._go(RoundState.CONFIGURING)
        self.quotas = {k: int(q) for k, q in quotas.items()}
        self.training_deadline = training_deadline
        self.report_deadline = report_deadline

    def start_training(self) -> None:
        """configuring → training: the first site took work."""
        self._go(RoundState.TRAINING)

    def mark_reported(self, site: str) -> None:
        """Record that ``site`` delivered its contribution (only while accepting)."""
        if not self.accepting:
            raise ProtocolError(f"round {self.number} is {self.state}; it takes no more reports")
        if site not in self.assigned:
            raise ProtocolError(f"{site!r} has no quota in round {self.number}")
        self.reported.add(site)

    def begin_aggregation(self) -> None:
        """training → aggregating: contributions are closed."""
        self._go(RoundState.AGGREGATING)

    def commit(self) -> None:
        """aggregating → committed."""
        self._go(RoundState.COMMITTED)

    def abandon(self, reason: str) -> None:
        """Any non-terminal state → abandoned, saying why."""
        self._go(RoundState.ABANDONED)
        self.reason = reason

    def all_reported(self, also_done: Iterable[str] = ()) -> bool:
        """True when every assigned site reported (``also_done`` counts as reported)."""
        return self.assigned <= (self.reported | set(also_done))

    def due(self, now: float, also_done: Iterable[str] = ()) -> str | None:
        """Why the round should stop now ("reported", "deadline", "unclaimed"), or None."""
        if self.state == RoundState.CONFIGURING and self.training_deadline is not None:
            return "unclaimed" if now >= self.training_deadline else None
        if self.state != RoundState.TRAINING:
            return None
        if self.all_reported(also_done):
            return "reported"
        assert self.report_deadline is not None  # set by open()
        return "deadline" if now >= self.report_deadline else None
