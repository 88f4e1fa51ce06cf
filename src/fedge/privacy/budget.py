"""A job's privacy budget: stop *before* the round that would push ε past ``max_epsilon``.

The check is made before a round starts, from the accountant's ε after one more round, so the
published model never carries more than the budget. :func:`rounds_within_budget` answers the
planning question (how many rounds fit?) by an integer search over ε(T), which is increasing in T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedge.errors import ConfigError, PrivacyBudgetExceeded
from fedge.privacy.accountant import AccountantKind, PrivacyAccountant, Sampling

__all__ = ["BudgetCheck", "check_next_round", "require_next_round", "rounds_within_budget"]


@dataclass(frozen=True)
class BudgetCheck:
    """Whether one more round fits in the budget, and the numbers behind the answer."""

    allowed: bool
    rounds_done: int
    epsilon_now: float
    epsilon_next: float
    max_epsilon: float
    delta: float

    @property
    def message(self) -> str:
        """One line for logs, the CLI and the round record."""
        if self.allowed:
            return (
                f"round {self.rounds_done + 1} fits the privacy budget: ε will be "
                f"{self.epsilon_next:.4g} ≤ max_epsilon {self.max_epsilon:g} (δ={self.delta:.3g})"
            )
        return (
            f"privacy budget reached after {self.rounds_done} rounds: round "
            f"{self.rounds_done + 1} would raise ε from {self.epsilon_now:.4g} to "
            f"{self.epsilon_next:.4g} > max_epsilon {self.max_epsilon:g} (δ={self.delta:.3g}); "
            "the job stops here. To train longer, raise max_epsilon, raise noise_multiplier, "
            "or select fewer devices per round"
        )


def _check_max(max_epsilon: float) -> None:
    if not (max_epsilon > 0 and not math.isnan(max_epsilon)):
        raise ConfigError(f"max_epsilon must be > 0 (e.g. 8.0), got {max_epsilon}")


def check_next_round(accountant: PrivacyAccountant, max_epsilon: float) -> BudgetCheck:
    """Would the next round keep ε ≤ ``max_epsilon``? (The accountant is not changed.)"""
    _check_max(max_epsilon)
    now = accountant.epsilon()
    nxt = accountant.epsilon_after(accountant.rounds + 1)
    return BudgetCheck(
        nxt <= max_epsilon, accountant.rounds, now, nxt, max_epsilon, accountant.delta
    )


def require_next_round(accountant: PrivacyAccountant, max_epsilon: float) -> BudgetCheck:
    """Like :func:`check_next_round` but raises :class:`PrivacyBudgetExceeded` when it does not fit."""
    check = check_next_round(accountant, max_epsilon)
    if not check.allowed:
        raise PrivacyBudgetExceeded(check.message)
    return check


def rounds_within_budget(
    max_epsilon: float,
    noise_multiplier: float,
    sampling_rate: float,
    delta: float,
    kind: AccountantKind = "rdp",
    *,
    sampling: Sampling = "poisson",
    fleet_size: int | None = None,
    clip_count_stddev: float | None = None,
    max_rounds: int = 1_000_000,
) -> int:
    """The largest number of rounds T with ε(T) ≤ ``max_epsilon`` (capped at ``max_rounds``)."""
    _check_max(max_epsilon)
    acc = PrivacyAccountant(
        noise_multiplier,
        sampling_rate,
        delta,
        kind,
        sampling=sampling,
        fleet_size=fleet_size,
        clip_count_stddev=clip_count_stddev,
    )
    if acc.epsilon_after(1) > max_epsilon:
        return 0
    lo, hi = 1, 2  # invariant: ε(lo) ≤ max; search for hi with ε(hi) > max
    while hi <= max_rounds and acc.epsilon_after(hi) <= max_epsilon:
        lo, hi = hi, hi * 2
    if hi > max_rounds:
        if acc.epsilon_after(max_rounds) <= max_epsilon:
            return max_rounds
        hi = max_rounds
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if acc.epsilon_after(mid) <= max_epsilon:
            lo = mid
        else:
            hi = mid
    return lo
