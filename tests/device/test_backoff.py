"""The check-in backoff (fedge.device.backoff): full jitter under a capped exponential ceiling."""

from __future__ import annotations

import random
import statistics

import pytest

from fedge.device.backoff import Backoff


class Ceilings(random.Random):
    """A generator that records the interval each delay is drawn from, and draws its top."""

    def __init__(self) -> None:
        super().__init__(0)
        self.asked: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.asked.append((a, b))
        return b


def test_the_ceiling_doubles_from_base_up_to_the_cap() -> None:
    rng = Ceilings()
    backoff = Backoff(base_s=0.5, cap_s=10.0, rng=rng)
    delays = [backoff.next_delay() for _ in range(8)]
    assert [b for _, b in rng.asked] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert all(a == 0.0 for a, _ in rng.asked)  # full jitter: from zero, not from the ceiling
    assert delays == [b for _, b in rng.asked] and backoff.attempt == 8


def test_a_long_outage_stays_at_the_cap_without_overflow() -> None:
    backoff = Backoff(base_s=0.5, cap_s=30.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(2_000)]  # 2^2000 would overflow a float
    assert max(delays) <= 30.0 and min(delays) >= 0.0
    assert max(delays[-500:]) > 25.0  # still spread over the whole capped interval


def test_delays_are_jittered_over_the_whole_interval() -> None:
    """Uniform on [0, ceiling]: devices that failed together come back spread out."""
    samples = []
    for seed in range(2_000):  # 2,000 devices, each at its fourth failure (ceiling 4 s)
        backoff = Backoff(base_s=0.5, cap_s=60.0, rng=random.Random(seed), attempt=3)
        samples.append(backoff.next_delay())
    assert 0.0 <= min(samples) < 0.05 and 3.95 < max(samples) <= 4.0
    assert statistics.fmean(samples) == pytest.approx(2.0, abs=0.1)  # the uniform's mean
    assert len({round(s, 3) for s in samples}) > 1_500  # no synchronised waves
    quarters = [sum(q * 1.0 <= s < (q + 1) * 1.0 for s in samples) for q in range(4)]
    assert all(400 < n < 600 for n in quarters), quarters


def test_a_servers_retry_after_is_a_floor_and_reset_starts_over() -> None:
    rng = Ceilings()
    backoff = Backoff(base_s=0.5, cap_s=10.0, rng=rng)
    assert backoff.next_delay(at_least=7.0) == 7.0  # ceiling 0.5, but the server said 7 s
    backoff.next_delay()
    assert backoff.attempt == 2
    backoff.reset()
    assert backoff.attempt == 0
    backoff.next_delay()
    assert rng.asked[-1] == (0.0, 0.5)  # from base_s again
    jittered = Backoff(base_s=0.5, cap_s=10.0, rng=random.Random(3), attempt=10)
    assert all(jittered.next_delay(at_least=2.5) >= 2.5 for _ in range(200))
