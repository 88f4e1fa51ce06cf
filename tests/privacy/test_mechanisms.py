"""Clipping and Gaussian noise: bounds hold, noise has the calibrated standard deviation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedge.errors import ConfigError
from fedge.privacy.clipping import (
    AdaptiveClipState,
    clip_rows,
    clip_tree,
    clip_update,
    noisy_unclipped_fraction,
    update_clip,
    update_noise_multiplier,
)
from fedge.privacy.mechanisms import dp_fedavg_mean, dp_fedavg_mean_tree, local_dp_update


def _std_interval(sample: np.ndarray, level: float = 0.999) -> tuple[float, float]:
    """Chi-square confidence interval for the standard deviation of a zero-mean normal sample."""
    n = sample.size
    ss = float(np.sum(sample.astype(np.float64) ** 2))
    lo = math.sqrt(ss / stats.chi2.ppf((1 + level) / 2, n))
    hi = math.sqrt(ss / stats.chi2.ppf((1 - level) / 2, n))
    return lo, hi


def test_clip_rows_bounds_every_row_and_matches_per_row_reference(rng: np.random.Generator) -> None:
    scales = rng.lognormal(0.0, 1.5, size=(300, 1))
    m = (rng.normal(size=(300, 50)) * scales).astype(np.float32)
    clipped, norms = clip_rows(m, 1.0)
    assert np.all(np.linalg.norm(clipped.astype(np.float64), axis=1) <= 1.0 * (1 + 1e-6))
    for row, got, norm in zip(m, clipped, norms, strict=True):  # reference: one row at a time
        ref, ref_norm = clip_update(row, 1.0)
        np.testing.assert_allclose(got, ref, rtol=1e-6)
        assert norm == pytest.approx(ref_norm)
    small = np.linalg.norm(m, axis=1) < 1.0
    np.testing.assert_array_equal(clipped[small], m[small])  # short rows untouched


def test_clip_zero_rows_and_trees() -> None:
    clipped, norms = clip_rows(np.zeros((3, 4), np.float32), 0.5)
    assert np.all(clipped == 0) and np.all(norms == 0)
    tree = {"w": np.full((2, 2), 3.0, np.float32), "b": np.full(1, 4.0, np.float32)}
    out, norm = clip_tree(tree, 2.0)
    assert norm == pytest.approx(math.sqrt(4 * 9 + 16))
    total = math.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in out.values()))
    assert total == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize("clip", [0.0, -1.0, math.nan, math.inf])
def test_bad_clip_refused(clip: float) -> None:
    with pytest.raises(ConfigError, match="clip_norm"):
        clip_rows(np.ones((2, 2)), clip)


def test_dp_fedavg_noise_std_matches_z_times_c(rng: np.random.Generator) -> None:
    z, c, m = 1.3, 0.7, 50.0
    zeros = np.zeros(200_000, np.float32)
    noisy_mean = dp_fedavg_mean(zeros, m, c, z, rng)
    lo, hi = _std_interval(noisy_mean * m)  # undo the fixed denominator
    assert lo <= z * c <= hi
    assert abs(float(np.mean(noisy_mean * m))) < 5 * z * c / math.sqrt(zeros.size)


def test_dp_fedavg_uses_fixed_denominator(rng: np.random.Generator) -> None:
    s = np.full(10, 12.0, np.float32)
    out = dp_fedavg_mean(s, 4.0, 1.0, 0.0, rng)  # no noise: exactly sum / expected devices
    np.testing.assert_allclose(out, 3.0)
    tree = dp_fedavg_mean_tree({"a": s, "b": s[:2]}, 4.0, 1.0, 0.0, rng)
    np.testing.assert_allclose(tree["b"], 3.0)
    with pytest.raises(ConfigError, match="expected_devices"):
        dp_fedavg_mean(s, 0.0, 1.0, 1.0, rng)
    with pytest.raises(ConfigError, match="noise_multiplier"):
        dp_fedavg_mean(s, 4.0, 1.0, -0.5, rng)


def test_local_dp_noise_std(rng: np.random.Generator) -> None:
    out = local_dp_update(np.zeros(100_000, np.float32), 0.5, 4.0, rng)
    lo, hi = _std_interval(out)
    assert lo <= 2.0 <= hi


def test_adaptive_clip_moves_towards_target_quantile(rng: np.random.Generator) -> None:
    norms = rng.lognormal(0.0, 0.5, size=2000)
    state = AdaptiveClipState(clip_norm=0.1, target_quantile=0.5, learning_rate=0.2)
    for _ in range(300):
        frac = noisy_unclipped_fraction(norms, state.clip_norm, norms.size, 20.0, rng)
        state = update_clip(state, frac)
    assert state.clip_norm == pytest.approx(float(np.median(norms)), rel=0.1)


def test_update_clip_is_geometric() -> None:
    state = AdaptiveClipState(1.0, 0.5, 0.2)
    assert update_clip(state, 1.0).clip_norm == pytest.approx(math.exp(-0.1))
    assert update_clip(state, 0.0).clip_norm == pytest.approx(math.exp(0.1))
    assert state.clip_norm == 1.0  # frozen: a new state is returned


def test_noisy_fraction_without_noise_is_exact(rng: np.random.Generator) -> None:
    norms = np.array([0.1, 0.5, 2.0, 3.0])
    assert noisy_unclipped_fraction(norms, 1.0, 4, 0.0, rng) == pytest.approx(0.5)


def test_update_noise_multiplier_and_refusal() -> None:
    assert update_noise_multiplier(1.0, 5.0) == pytest.approx((1 - 0.01) ** -0.5)
    with pytest.raises(ConfigError, match="clip_count_stddev"):
        update_noise_multiplier(2.0, 0.5)
    with pytest.raises(ConfigError, match="target_quantile"):
        AdaptiveClipState(1.0, target_quantile=1.0)
