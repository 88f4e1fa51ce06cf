"""Discrete Gaussian noise and distributed DP for secure aggregation.

**Sampler.** The discrete Gaussian N_Z(0, σ²), P(x) ∝ exp(−x²/(2σ²)) on the integers, drawn by
rejection from a discrete Laplace as in Canonne, Kamath, Steinke, "The Discrete Gaussian for
Differential Privacy" (NeurIPS 2020, arXiv:2004.00010), Algorithm 3: with t = ⌊σ⌋ + 1 draw
Y ~ DLap(t) (a difference of two geometric variables) and accept with probability
exp(−(|Y| − σ²/t)² / (2σ²)). Here it is vectorised: whole batches are proposed and accepted at once
(the loop runs over rejection rounds, about two, never over coordinates). It uses float arithmetic
rather than the paper's exact rational arithmetic, which is what Kairouz et al.'s own
implementation does as well.

**Distributed DP** follows Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian Mechanism for
Federated Learning with Secure Aggregation" (ICML 2021, arXiv:2102.06387). Each device scales its
clipped update to the integer grid (granularity γ), rounds it (conditional randomized rounding, done
by secure aggregation's quantizer), adds N_Z(0, σ_dev²) and only then masks it. The masked sum
carries the sum of n devices' noise, approximately N_Z(0, n·σ_dev²), so no party sees an
un-noised sum. This module chooses σ_dev from a target central noise multiplier and computes the
guarantee the sum actually has (their Theorem 1 with the τ correction) as an effective Gaussian
noise multiplier for the accountant:

    ε_cdp = min( sqrt(Δ₂² / (nσ²) + τd/2),  Δ₁/(√n σ) + τd ),
    τ = 10 Σ_{k=1}^{n−1} exp(−2π²σ² k/(k+1)),       effective z = 1/ε_cdp,

since a Gaussian mechanism with multiplier z is (½·(1/z)²)-zCDP. Δ₂ is the L2 sensitivity after
rounding (:func:`rounded_l2_sensitivity`, their Theorem 8 bound for conditional rounding with
retry probability β) and Δ₁ ≤ min(Δ₂², √d·Δ₂) for integer vectors.

Plan with n = the *minimum* number of devices the round needs to commit: if more survive, the sum
only carries more noise. A round with fewer survivors than n must not be committed.

**One device's share** (:func:`discretise_and_noise`): scale the L2-clipped update by 1/γ,
round it conditionally (:func:`conditional_rounding`: unbiased, redrawn until its norm is ≤ Δ₂)
and add N_Z(0, σ_dev²). The result is an integer vector; secure aggregation then only has to sum
integers. :meth:`DistributedNoisePlan.secagg_range` gives the range and levels that make its
quantiser exact on them (one level per integer, so there is no second rounding) and
:meth:`DistributedNoisePlan.secagg_bits` a modulus with headroom for the most devices a round can
sum. The simulator (:mod:`fedge.simulation.distributed`) and the networked device
(:mod:`fedge.device.secure`) both call these, so they run the same algorithm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedge.errors import ConfigError, PrivacyError

__all__ = [
    "NOISE_TAIL",
    "DistributedNoisePlan",
    "ShareRule",
    "add_discrete_gaussian_noise",
    "conditional_rounding",
    "discrete_gaussian",
    "discretise_and_noise",
    "distributed_tau",
    "plan_distributed_noise",
    "rounded_l2_sensitivity",
]

DEFAULT_BETA = math.exp(-0.5)  # Kairouz et al.'s retry probability for conditional rounding
# The secure sum's range covers ±(Δ₂ + 12σ) per coordinate and device: a noised coordinate falls
# outside it (and would be clipped) with probability below 2·exp(-72) ≈ 1e-31.
NOISE_TAIL = 12.0


def discrete_gaussian(
    shape: int | tuple[int, ...], sigma: float, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Samples of N_Z(0, σ²), the discrete Gaussian (Canonne et al. 2020, Algorithm 3)."""
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ConfigError(f"discrete Gaussian sigma must be a finite number >= 0, got {sigma}")
    size = int(np.prod(shape, dtype=np.int64))
    out = np.zeros(size, dtype=np.int64)
    if sigma == 0 or size == 0:
        return out.reshape(shape)
    t = math.floor(sigma) + 1
    p = -math.expm1(-1.0 / t)  # success probability of the geometric giving DLap(t)
    filled = 0
    while filled < size:
        want = size - filled
        batch = int(want * 1.5) + 16  # acceptance is ~0.5-0.8; unfilled slots go round again
        y = rng.geometric(p, batch).astype(np.int64) - rng.geometric(p, batch).astype(np.int64)
        accept = rng.random(batch) < np.exp(-((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2))
        kept = y[accept][:want]
        out[filled : filled + kept.size] = kept
        filled += kept.size
    return out.reshape(shape)


def add_discrete_gaussian_noise(
    quantized: NDArray[np.integer], sigma: float, rng: np.random.Generator
) -> NDArray[np.int64]:
    """A device's integer (quantized, not yet masked) update + N_Z(0, σ²) noise per coordinate."""
    q = np.asarray(quantized)
    if not np.issubdtype(q.dtype, np.integer):
        raise ConfigError(f"distributed DP noise is added to integer vectors, got dtype {q.dtype}")
    return q.astype(np.int64) + discrete_gaussian(q.shape, sigma, rng)


def distributed_tau(devices: int, sigma: float) -> float:
    """τ of Kairouz et al. Thm 1: how far a sum of n N_Z(0, σ²) is from N_Z(0, nσ²)."""
    if devices < 1:
        raise ConfigError(f"devices must be >= 1, got {devices}")
    if devices == 1:
        return 0.0
    k = np.arange(1, devices, dtype=np.float64)
    return float(10.0 * np.sum(np.exp(-2.0 * math.pi**2 * sigma**2 * k / (k + 1.0))))


def rounded_l2_sensitivity(scaled_clip: float, dim: int, beta: float = DEFAULT_BETA) -> float:
    """L2 norm bound after conditional randomized rounding of a vector of norm ≤ c (Thm 8)."""
    if not scaled_clip > 0 or dim < 1 or not 0.0 <= beta < 1.0:
        raise ConfigError(
            f"need scaled_clip > 0, dim >= 1, 0 <= beta < 1; got {scaled_clip}, {dim}, {beta}"
        )
    c, d = scaled_clip, float(dim)
    worst = (c + math.sqrt(d)) ** 2
    if beta == 0:
        return math.sqrt(worst)
    conditional = c**2 + d / 4 + math.sqrt(2 * math.log(1 / beta)) * (c + math.sqrt(d) / 2)
    return math.sqrt(min(conditional, worst))


@dataclass(frozen=True)
class ShareRule:
    """What one device needs to make its share: grid step γ, rounding bound Δ₂, its noise σ."""

    granularity: float  # γ, in update units
    l2_sensitivity: float  # Δ₂: the rounded update's L2 norm stays at most this (integer units)
    per_device_stddev: float  # σ_dev of the discrete Gaussian, in integer units


@dataclass(frozen=True)
class DistributedNoisePlan:
    """How much discrete Gaussian noise each device adds, and what the sum guarantees."""

    devices: int  # n: the minimum number of devices whose noise reaches the sum
    granularity: float  # γ: one integer step equals γ in update units
    l2_sensitivity: float  # Δ₂ in integer units, after rounding
    per_device_stddev: float  # σ_dev in integer units
    tau: float
    effective_noise_multiplier: float  # what the accountant must use for one round

    @property
    def share(self) -> ShareRule:
        """The part of the plan each device applies (:func:`discretise_and_noise`)."""
        return ShareRule(self.granularity, self.l2_sensitivity, self.per_device_stddev)

    def summed_stddev(self, survivors: int) -> float:
        """Std of the noise on the sum of ``survivors`` devices' shares, in update units."""
        if survivors < 1:
            raise ConfigError(f"survivors must be >= 1, got {survivors}")
        return self.per_device_stddev * self.granularity * math.sqrt(survivors)

    @property
    def reach(self) -> int:
        """Bound on |coordinate| of a device's share: Δ₂ (the rounded norm) + 12σ of noise."""
        return math.ceil(self.l2_sensitivity + NOISE_TAIL * self.per_device_stddev)

    def secagg_range(self) -> tuple[float, float, int]:
        """``(lo, hi, levels)`` that quantise the integers in ±reach exactly (step 1)."""
        r = self.reach
        return -float(r), float(r), 2 * r

    def secagg_bits(self, max_devices: int) -> int:
        """Modulus bits so ``max_devices`` shares sum without wrapping, with 2x headroom (≥ 32)."""
        if max_devices < 1:
            raise ConfigError(f"max_devices must be >= 1, got {max_devices}")
        bits = max(32, (max_devices * self.secagg_range()[2]).bit_length() + 1)
        if bits > 62:  # masks are at most 64 bits, and dequantisation must stay exact in float64
            raise ConfigError(
                f"{max_devices} devices × {2 * self.reach} levels need {bits} bits: use a coarser "
                f"granularity (larger than {self.granularity:g}) or fewer devices per round"
            )
        return bits


def conditional_rounding(
    scaled: NDArray[np.float64], bound: float, rng: np.random.Generator, max_tries: int = 100
) -> NDArray[np.int64]:
    """Unbiased randomized rounding of each row, redrawn until its L2 norm is ≤ ``bound``."""
    rows = np.atleast_2d(np.asarray(scaled, dtype=np.float64))
    floor = np.floor(rows)
    frac = rows - floor
    out = np.empty(rows.shape, dtype=np.int64)
    todo = np.arange(rows.shape[0])
    for _ in range(max_tries):
        draw = floor[todo] + (rng.random((todo.size, rows.shape[1])) < frac[todo])
        ok = np.sqrt(np.einsum("ij,ij->i", draw, draw)) <= bound
        out[todo[ok]] = draw[ok].astype(np.int64)
        todo = todo[~ok]
        if todo.size == 0:
            return out.reshape(np.shape(scaled))
    raise PrivacyError(
        f"randomized rounding exceeded the norm bound {bound:.4g} {max_tries} times; use a finer "
        "privacy.granularity"
    )


def discretise_and_noise(
    clipped: NDArray[np.floating], rule: ShareRule, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Devices' shares: L2-clipped updates (one per row, or one vector) on the integer grid,
    conditionally rounded to norm ≤ Δ₂, plus N_Z(0, σ_dev²) per coordinate."""
    scaled = np.asarray(clipped, dtype=np.float64) / rule.granularity
    if not np.isfinite(scaled).all():
        raise PrivacyError("a clipped update holds NaN or Inf; it cannot be discretised")
    rounded = conditional_rounding(scaled, rule.l2_sensitivity, rng)
    return add_discrete_gaussian_noise(rounded, rule.per_device_stddev, rng)


def plan_distributed_noise(
    noise_multiplier: float,
    devices: int,
    clip_norm: float,
    granularity: float,
    dim: int,
    beta: float = DEFAULT_BETA,
) -> DistributedNoisePlan:
    """Per-device σ so n devices' summed noise has std z·Δ₂; refuses when τ eats the guarantee."""
    if not noise_multiplier > 0:
        raise ConfigError(f"noise_multiplier must be > 0 (e.g. 1.0), got {noise_multiplier}")
    if not (clip_norm > 0 and granularity > 0):
        raise ConfigError(f"clip_norm and granularity must be > 0, got {clip_norm}, {granularity}")
    delta2 = rounded_l2_sensitivity(clip_norm / granularity, dim, beta)
    sigma = noise_multiplier * delta2 / math.sqrt(devices)
    tau = distributed_tau(devices, sigma)
    delta1 = min(delta2**2, math.sqrt(dim) * delta2)
    root_n_sigma = math.sqrt(devices) * sigma
    eps_cdp = min(
        math.sqrt(delta2**2 / root_n_sigma**2 + 0.5 * tau * dim),
        delta1 / root_n_sigma + tau * dim,
    )
    effective = 1.0 / eps_cdp
    if effective < 0.9 * noise_multiplier:
        raise PrivacyError(
            f"per-device discrete Gaussian noise σ={sigma:.3g} is too coarse for {devices} devices "
            f"and {dim} parameters (τ·d = {tau * dim:.3g}): the sum is only as private as noise "
            f"multiplier {effective:.3g}, not {noise_multiplier:g}; use a finer granularity "
            f"(smaller than {granularity:g}) so the noise spans more integer steps"
        )
    return DistributedNoisePlan(devices, granularity, delta2, sigma, tau, effective)
