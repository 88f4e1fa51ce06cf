"""Devices' shares of distributed DP: noise calibration, dropout accounting, exact quantisation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from fedge.errors import ConfigError, PrivacyError
from fedge.privacy import (
    PrivacyConfig,
    clip_rows,
    discretise_and_noise,
    plan_distributed_noise,
    plan_privacy,
)
from fedge.secagg import SecAggConfig, dequantize_sum, quantize

Z, CLIP, GAMMA, DIM = 1.0, 1.0, 1e-2, 3_000


def test_sum_of_n_device_shares_has_the_target_std(rng: np.random.Generator) -> None:
    n = 8
    plan = plan_distributed_noise(Z, n, clip_norm=CLIP, granularity=GAMMA, dim=DIM)
    shares = discretise_and_noise(np.zeros((n, DIM)), plan.share, rng)  # zero updates: pure noise
    assert shares.dtype == np.int64
    total = shares.sum(axis=0) * plan.granularity  # what the unmasked secure sum reveals
    target = Z * plan.l2_sensitivity * plan.granularity  # z·Δ₂, in update units
    assert plan.summed_stddev(n) == pytest.approx(target)
    assert float(np.std(total)) == pytest.approx(target, rel=5 * math.sqrt(2 / DIM))


def test_noise_is_planned_for_the_fewest_survivors(rng: np.random.Generator) -> None:
    """Calibrated to min survivors m: any s ≥ m survivors carry at least the target noise."""
    m, selected = 4, 8
    plan = plan_distributed_noise(Z, m, clip_norm=CLIP, granularity=GAMMA, dim=DIM)
    target = Z * plan.l2_sensitivity * plan.granularity
    assert plan.per_device_stddev == pytest.approx(Z * plan.l2_sensitivity / math.sqrt(m))
    for survivors in range(m, selected + 1):
        shares = discretise_and_noise(np.zeros((survivors, DIM)), plan.share, rng)
        got = float(np.std(shares.sum(axis=0) * plan.granularity))
        want = target * math.sqrt(survivors / m)
        assert got == pytest.approx(want, rel=5 * math.sqrt(2 / DIM))
        assert want >= target
    # Planning for all 8 would leave a round with 4 survivors at half the variance: ε too small.
    optimistic = plan_distributed_noise(Z, selected, clip_norm=CLIP, granularity=GAMMA, dim=DIM)
    assert optimistic.summed_stddev(m) < 0.75 * target


def test_plan_privacy_accounts_for_the_minimum_and_the_most_sampled() -> None:
    config = PrivacyConfig(mode="distributed", clip_norm=CLIP, noise_multiplier=Z)

    def eps(**kw: int) -> tuple[int, float, float]:
        p = plan_privacy(config, rounds=5, devices_per_round=6, fleet_size=100,
                         sampling="fixed_size", dim=DIM, **kw)  # fmt: skip
        assert p.distributed is not None and p.accountant is not None
        return p.distributed.devices, p.accountant.sampling_rate, p.accountant.epsilon_after(5)

    at_k, at_min = eps(), eps(min_devices=3)
    assert at_k[0] == 6 and at_min[0] == 3
    # the accountant's multiplier is the noise of the guaranteed sum, not per device: same ε
    assert at_min[2] == pytest.approx(at_k[2])
    over = eps(min_devices=3, sampled_per_round=9)  # over-selection hands out 9 tasks
    assert over[1] == pytest.approx(9 / 100) and over[2] > at_min[2]


def test_shares_are_clipped_rounded_within_the_bound_and_unbiased(
    rng: np.random.Generator,
) -> None:
    plan = plan_distributed_noise(Z, 4, clip_norm=CLIP, granularity=GAMMA, dim=DIM)
    clipped, _ = clip_rows(rng.normal(0, 1, (4, DIM)), CLIP)
    no_noise = dataclasses.replace(plan.share, per_device_stddev=0.0)
    draws = np.stack([discretise_and_noise(clipped, no_noise, rng) for _ in range(50)])
    assert np.all(np.linalg.norm(draws, axis=2) <= plan.l2_sensitivity)
    assert np.abs(draws.mean(axis=0) * GAMMA - clipped).max() < 5 * GAMMA / math.sqrt(50)
    with pytest.raises(PrivacyError, match="NaN or Inf"):
        discretise_and_noise(np.full((1, DIM), np.nan), plan.share, rng)


def test_secure_aggregation_sums_the_noised_integers_exactly(rng: np.random.Generator) -> None:
    """Noise goes in before quantisation; the range has one level per integer, so the secure
    sum's quantiser rounds nothing again and the modulus never wraps."""
    n = 8
    plan = plan_distributed_noise(Z, 4, clip_norm=CLIP, granularity=GAMMA, dim=DIM)
    clipped, _ = clip_rows(rng.normal(0, 1, (n, DIM)), CLIP)
    shares = discretise_and_noise(clipped, plan.share, rng)
    assert np.abs(shares).max() <= plan.reach
    lo, hi, levels = plan.secagg_range()
    bits = plan.secagg_bits(n)
    params = SecAggConfig(clip_range=(lo, hi), bits=bits, levels=levels).resolve(n, DIM)
    assert params.step == 1.0 and 2 * n * params.levels <= 2**params.bits  # 2x headroom
    q = [quantize(s.astype(np.float64), params, bytes([i]) * 32) for i, s in enumerate(shares)]
    assert all(np.array_equal(qi.astype(np.int64) + lo, s) for qi, s in zip(q, shares, strict=True))
    total = np.zeros(DIM, dtype=np.uint64)
    for qi in q:
        total = (total + qi.astype(np.uint64)) % (2**params.bits)
    np.testing.assert_array_equal(dequantize_sum(total, n, params), shares.sum(axis=0))


def test_modulus_headroom_is_refused_when_impossible() -> None:
    plan = plan_distributed_noise(Z, 4, clip_norm=CLIP, granularity=1e-9, dim=DIM)
    assert plan.secagg_bits(3) > 32
    with pytest.raises(ConfigError, match="coarser granularity"):
        plan_distributed_noise(Z, 4, clip_norm=CLIP, granularity=1e-13, dim=DIM).secagg_bits(10**6)
    with pytest.raises(ConfigError):
        plan.summed_stddev(0)
