"""Discrete Gaussian sampler and distributed DP over secure aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedge.errors import ConfigError, PrivacyError
from fedge.privacy.distributed import (
    add_discrete_gaussian_noise,
    discrete_gaussian,
    distributed_tau,
    plan_distributed_noise,
    rounded_l2_sensitivity,
)


def _exact_variance(sigma: float) -> float:
    """Variance of N_Z(0, σ²) by summing its probability mass function."""
    x = np.arange(-int(20 * sigma) - 20, int(20 * sigma) + 21, dtype=np.float64)
    w = np.exp(-(x**2) / (2 * sigma**2))
    return float(np.sum(w * x**2) / np.sum(w))


@pytest.mark.parametrize("sigma", [0.4, 1.0, 3.7, 25.0])
def test_discrete_gaussian_variance_and_mean(sigma: float, rng: np.random.Generator) -> None:
    n = 200_000
    x = discrete_gaussian(n, sigma, rng)
    assert x.dtype == np.int64
    var = _exact_variance(sigma)
    # The sample variance of n draws has std ≈ sqrt(2/n)·var (near-Gaussian tails): 5-sigma band.
    assert float(np.var(x)) == pytest.approx(var, rel=5 * math.sqrt(2 / n) + 1e-3)
    assert abs(float(np.mean(x))) < 5 * math.sqrt(var / n)


def test_discrete_gaussian_pmf_matches(rng: np.random.Generator) -> None:
    sigma = 1.5
    x = discrete_gaussian(300_000, sigma, rng)
    support = np.arange(-3, 4)
    w = np.exp(-(np.arange(-30, 31) ** 2) / (2 * sigma**2))
    pmf = np.exp(-(support**2) / (2 * sigma**2)) / w.sum()
    freq = np.array([np.mean(x == k) for k in support])
    np.testing.assert_allclose(freq, pmf, atol=5 * math.sqrt(0.25 / x.size))


def test_zero_sigma_and_shapes(rng: np.random.Generator) -> None:
    assert np.all(discrete_gaussian((3, 4), 0.0, rng) == 0)
    assert discrete_gaussian((3, 4), 2.0, rng).shape == (3, 4)
    with pytest.raises(ConfigError):
        discrete_gaussian(3, -1.0, rng)
    with pytest.raises(ConfigError, match="integer"):
        add_discrete_gaussian_noise(np.zeros(3, np.float32), 1.0, rng)


def test_distributed_sum_over_devices_has_target_variance(rng: np.random.Generator) -> None:
    z, devices, dim = 1.0, 64, 4_000
    plan = plan_distributed_noise(z, devices, clip_norm=1.0, granularity=1e-2, dim=dim)
    target_std = z * plan.l2_sensitivity
    assert plan.per_device_stddev == pytest.approx(target_std / math.sqrt(devices))
    quantized = np.zeros((devices, dim), np.int64)  # each device's (zero) quantized update
    noised = add_discrete_gaussian_noise(quantized, plan.per_device_stddev, rng)
    summed = noised.sum(axis=0)  # what secure aggregation reveals
    var = float(np.var(summed))
    assert var == pytest.approx(target_std**2, rel=5 * math.sqrt(2 / dim))
    assert plan.effective_noise_multiplier == pytest.approx(z, rel=1e-6)  # τ is negligible


def test_tau_and_coarse_noise_refused() -> None:
    assert distributed_tau(1, 0.5) == 0.0
    assert distributed_tau(100, 0.3) > distributed_tau(100, 1.0) > distributed_tau(100, 3.0)
    with pytest.raises(PrivacyError, match="finer granularity"):
        plan_distributed_noise(1.0, 1000, clip_norm=1.0, granularity=1.0, dim=10)


def test_rounded_sensitivity_bounds() -> None:
    c, d = 100.0, 10_000
    got = rounded_l2_sensitivity(c, d)
    assert c < got <= c + math.sqrt(d)
    assert rounded_l2_sensitivity(c, d, beta=0.0) == pytest.approx(c + math.sqrt(d))
