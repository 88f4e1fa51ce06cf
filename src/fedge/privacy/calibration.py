"""Calibration: from a target (ε, δ) over a number of rounds to the noise multiplier z.

ε after T rounds is decreasing in z, so a bracketed root search on z (doubling to bracket, then
Brent's method -- bisection safeguarded with secant steps, fewer accountant calls than plain
bisection) with the same accountant the job will use
(:class:`fedge.privacy.accountant.PrivacyAccountant`) finds the smallest z -- within a relative
tolerance -- whose ε is at most the target. The answer is always on the safe side: ε(z) ≤ target.

Targets no sensible z can meet are refused with a message that names what to change: fewer rounds
(the largest count that fits at the largest allowed z is computed), a larger ε, or fewer devices
per round.
"""

from __future__ import annotations

import math

from fedge.errors import CalibrationError, ConfigError
from fedge.privacy.accountant import AccountantKind, PrivacyAccountant, Sampling
from fedge.privacy.budget import rounds_within_budget

__all__ = ["MAX_NOISE_MULTIPLIER", "calibrate_noise_multiplier", "default_delta"]

MAX_NOISE_MULTIPLIER = 100.0  # beyond this the update is noise: refuse rather than train on it
_MIN_NOISE_MULTIPLIER = 1e-3  # a target this loose needs no search below it


def default_delta(fleet_size: int) -> float:
    """δ = 1/N^1.1 for a fleet of N devices (smaller than 1/N, as DP practice asks)."""
    if fleet_size < 1:
        raise ConfigError(f"fleet_size must be >= 1, got {fleet_size}")
    return float(fleet_size**-1.1) if fleet_size > 1 else 0.5


def calibrate_noise_multiplier(
    target_epsilon: float,
    delta: float,
    rounds: int,
    devices_per_round: int,
    fleet_size: int,
    kind: AccountantKind = "rdp",
    *,
    sampling: Sampling = "poisson",
    adaptive_clip_count_stddev: float | None = None,
    tolerance: float = 1e-3,
    max_noise_multiplier: float = MAX_NOISE_MULTIPLIER,
) -> float:
    """The smallest z (to ``tolerance``, relative) with ε after ``rounds`` ≤ ``target_epsilon``.

    With adaptive clipping the returned z is the *total* multiplier of the round; the update sum
    then uses :func:`fedge.privacy.clipping.update_noise_multiplier` of it.
    """
    from scipy.optimize import brentq  # scipy takes ~0.3 s to import: only when calibrating

    if not (math.isfinite(target_epsilon) and target_epsilon > 0):
        raise CalibrationError(
            f"target_epsilon must be a finite number > 0 (e.g. 8.0), got {target_epsilon}"
        )
    if not 0.0 < delta < 1.0:
        raise CalibrationError(
            f"delta must be in (0, 1); for {fleet_size} devices use e.g. "
            f"{default_delta(max(fleet_size, 1)):.3g} (1/N^1.1), got {delta}"
        )
    if rounds < 1:
        raise CalibrationError(f"rounds must be >= 1, got {rounds}")
    if fleet_size < 1 or not 1 <= devices_per_round <= fleet_size:
        raise CalibrationError(
            f"devices_per_round must be between 1 and fleet_size ({fleet_size}), "
            f"got {devices_per_round}"
        )
    rate = devices_per_round / fleet_size

    def eps(z: float) -> float:
        # Calibrating the total multiplier: account one Gaussian of multiplier z per round.
        acc = PrivacyAccountant(z, rate, delta, kind, sampling=sampling, fleet_size=fleet_size)
        return acc.epsilon_after(rounds)

    if eps(max_noise_multiplier) > target_epsilon:
        fits = rounds_within_budget(
            target_epsilon,
            max_noise_multiplier,
            rate,
            delta,
            kind,
            sampling=sampling,
            fleet_size=fleet_size,
            max_rounds=rounds,
        )
        fewer = (
            f"rounds to at most {fits}" if fits else "target_epsilon (one round alone exceeds it)"
        )
        raise CalibrationError(
            f"no noise multiplier up to {max_noise_multiplier:g} reaches ε ≤ {target_epsilon:g} "
            f"(δ={delta:.3g}) after {rounds} rounds with {devices_per_round} of {fleet_size} "
            f"devices per round (ε would be {eps(max_noise_multiplier):.3g}). Change one of: "
            f"{fewer}; target_epsilon to at least "
            f"{eps(max_noise_multiplier):.3g}; or fewer devices per round / a larger fleet"
        )
    lo, hi = 0.5, 1.0  # bracket so that ε(lo) > target ≥ ε(hi)
    while eps(hi) > target_epsilon:
        lo, hi = hi, min(hi * 2.0, max_noise_multiplier)
    while eps(lo) <= target_epsilon and lo > _MIN_NOISE_MULTIPLIER:
        lo, hi = lo / 2.0, lo
    if eps(lo) > target_epsilon:
        # Brent's method (bisection safeguarded by secant steps) on log ε(z) − log target.
        def gap(z: float) -> float:
            # dp_accounting reports ε = 0 for very large z: treat it as the tiniest positive ε
            return math.log(max(eps(z), 1e-300)) - math.log(target_epsilon)

        hi = float(brentq(gap, lo, hi, xtol=1e-12, rtol=tolerance / 4))
        while eps(hi) > target_epsilon:  # land on the safe side of the root
            hi *= 1.0 + tolerance / 4
    if adaptive_clip_count_stddev is not None and not 2.0 * adaptive_clip_count_stddev > hi:
        raise CalibrationError(
            f"the target needs noise multiplier {hi:.4g}, but adaptive clipping with "
            f"clip_count_stddev {adaptive_clip_count_stddev:g} only works for multipliers below "
            f"{2 * adaptive_clip_count_stddev:g}: raise clip_count_stddev above {hi / 2:.4g}"
        )
    return hi
