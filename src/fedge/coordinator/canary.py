"""Staged (canary) rollout rules, without I/O: which gateways go first, and when to widen or halt.

A new production version first goes to a share of the gateways seen recently (the canaries:
``fraction`` of them, rounded up, at least one). Their devices load it, run the predictor's
health check (load, smoke prediction, optional holdout accuracy) and report. The rollout

- **halts** as soon as more than ``max_failures`` devices report a failed check;
- **widens** to every gateway once ``min_healthy`` devices report a passed check (and failures
  are still within ``max_failures``);
- **halts** when ``hold_s`` seconds pass without enough healthy reports.

A halted rollout sends the canaries back to the previous version and marks the new one rolled
back with the reason (:mod:`fedge.coordinator.rollouts` carries that out).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from fedge.errors import ConfigError

__all__ = ["CanaryPolicy", "Verdict", "judge", "pick_canaries"]


@dataclass(frozen=True)
class CanaryPolicy:
    """How a staged rollout proceeds (``[canary]`` in ``coordinator.toml``)."""

    fraction: float = 0.25  # share of the recently seen gateways that get the version first
    min_healthy: int = 1  # passed health reports needed to widen
    max_failures: int = 0  # more failed reports than this halt the rollout
    hold_s: float = 600.0  # no widening within this long after the start: halt

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"canary fraction must be in (0, 1], got {self.fraction}")
        if self.min_healthy < 1:
            raise ConfigError(f"canary min_healthy must be at least 1, got {self.min_healthy}")
        if self.max_failures < 0:
            raise ConfigError(f"canary max_failures must be >= 0, got {self.max_failures}")
        if not self.hold_s > 0:
            raise ConfigError(f"canary hold_s must be positive, got {self.hold_s}")


@dataclass(frozen=True)
class Verdict:
    """What to do with a rollout now: keep waiting, widen it, or halt it; and why."""

    action: Literal["wait", "widen", "halt"]
    reason: str


def pick_canaries(gateways: Iterable[str], fraction: float, salt: str) -> list[str]:
    """``ceil(fraction * n)`` (at least one) of ``gateways``, sorted.

    The choice is a stable hash of ``salt`` (the version's sha256) and each gateway id, so it
    is the same after a restart and spreads successive releases over different gateways.
    """
    ids = sorted(set(gateways))
    if not ids:
        return []
    count = max(1, math.ceil(fraction * len(ids)))
    ranked = sorted(ids, key=lambda g: hashlib.sha256(f"{salt}/{g}".encode()).hexdigest())
    return sorted(ranked[:count])


def judge(
    policy: CanaryPolicy, healthy: int, failed: int, started_at: float, now: float
) -> Verdict:
    """The verdict on a canary stage with these report counts at time ``now``."""
    if failed > policy.max_failures:
        return Verdict(
            "halt",
            f"{failed} canary device(s) failed the health check (at most"
            f" {policy.max_failures} allowed)",
        )
    if healthy >= policy.min_healthy:
        return Verdict(
            "widen",
            f"{healthy} healthy canary report(s) (needed {policy.min_healthy}), {failed} failed",
        )
    if now >= started_at + policy.hold_s:
        return Verdict(
            "halt",
            f"only {healthy} of {policy.min_healthy} healthy canary report(s) within the hold"
            f" time of {policy.hold_s:g} s",
        )
    return Verdict("wait", f"{healthy}/{policy.min_healthy} healthy, {failed} failed")
