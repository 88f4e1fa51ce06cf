"""Exponential backoff with full jitter (the AWS Architecture Blog's "Full Jitter").

``delay(attempt) = U(0, min(cap, base · 2^attempt))``: a fleet that lost its gateway spreads its
retries uniformly instead of returning in synchronised waves. The generator is injected.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Counts consecutive failures and turns them into jittered delays."""

    base_s: float = 0.5
    cap_s: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self, at_least: float = 0.0) -> float:
        """The delay after one more failure (never below ``at_least``, e.g. a server's Retry-After)."""
        ceiling = min(self.cap_s, self.base_s * (2.0 ** min(self.attempt, 62)))
        self.attempt += 1
        return max(at_least, self.rng.uniform(0.0, ceiling))

    def reset(self) -> None:
        """A success: the next failure starts from ``base_s`` again."""
        self.attempt = 0
