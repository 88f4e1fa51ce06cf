"""Distributed DP over the network: secure aggregation whose unmasked sum carries the DP noise.

The networked form of :mod:`fedge.simulation.distributed` (Kairouz, Liu, Steinke 2021,
arXiv:2102.06387), with the same functions from :mod:`fedge.privacy.distributed`:

- every device L2-clips its update to C, puts it on the integer grid of step γ, rounds it
  conditionally and adds its share N_Z(0, σ_dev²) of the noise *before* masking
  (:func:`fedge.device.secure.secure_vector`), so gateways see masked vectors and the
  coordinator only the noised sum;
- :func:`distributed_settings` makes the round's SecAgg+ settings exact for those integers: the
  clip range is ±reach (Δ₂ + 12σ_dev) with one quantisation level per integer, so secure
  aggregation rounds nothing a second time, and the modulus has room for the most devices a round
  can hand tasks to (the sum of the quotas), with a factor of 2 to spare;
- :func:`distributed_mean` turns the unmasked integer sum into the mean delta: × γ / K with the
  fixed denominator K = ``devices_per_round`` (DP-FedAvg's estimator; the count of survivors is
  not used, so the denominator does not depend on who took part).

**Dropouts.** σ_dev is planned for n = the job's ``min_devices``: the fewest survivors a round
commits with (:meth:`~fedge.coordinator.driver.RoundDriver` abandons a round below it), so every
committed sum carries noise of std at least z·Δ₂; more survivors only add noise. ε is accounted
for that worst case. The guarantee assumes the devices whose shares are in the sum added their
noise honestly; devices colluding with the coordinator could subtract their own share.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedge.coordinator.secure_setup import SecureSettings
from fedge.core.params import Params
from fedge.errors import ConfigError, ValidationError
from fedge.privacy import DistributedNoisePlan

__all__ = ["distributed_mean", "distributed_settings"]

# The noise plan decides these; a job's table may not set them under distributed DP.
_DERIVED_KEYS = ("clip_lo", "clip_hi", "levels", "weighting", "max_examples")


def distributed_settings(
    raw: Mapping[str, float | int | str | bool],
    noise: DistributedNoisePlan,
    max_devices: int,
) -> SecureSettings:
    """The job's ``secure_aggregation`` table with range, levels and bits from the noise plan."""
    given = sorted(k for k in _DERIVED_KEYS if k in raw)
    if given:
        raise ValidationError(
            f"secure_aggregation sets {', '.join(given)}, but with privacy.mode = 'distributed' "
            "the range and levels follow from the noise plan and every device weighs 1: remove "
            f"{', '.join(given)}"
        )
    lo, hi, levels = noise.secagg_range()
    try:
        bits = noise.secagg_bits(max_devices)
    except ConfigError as exc:
        raise ValidationError(f"secure_aggregation: {exc}") from None
    asked = raw.get("bits")
    if asked is not None and not isinstance(asked, bool) and isinstance(asked, int):
        if asked < bits:
            raise ValidationError(
                f"secure_aggregation bits = {asked} is too few: {max_devices} devices' noised "
                f"shares in ±{noise.reach} need {bits} bits (n·levels < 2^bits with headroom); "
                f"raise bits to {bits} or remove it"
            )
        bits = asked
    table = {
        **{k: v for k, v in raw.items() if k != "bits"},
        "clip_lo": lo,
        "clip_hi": hi,
        "levels": levels,
        "bits": bits,
        "weighting": "uniform",
    }
    try:
        return SecureSettings.parse(table)
    except ConfigError as exc:
        raise ValidationError(f"secure_aggregation: {exc}") from None


def distributed_mean(
    integer_sums: Mapping[str, np.ndarray], noise: DistributedNoisePlan, devices_per_round: int
) -> Params:
    """The unmasked sum of the devices' integer shares as a mean delta: × γ / K."""
    scale = noise.granularity / devices_per_round
    return {
        n: (np.asarray(a, np.float64) * scale).astype(np.float32) for n, a in integer_sums.items()
    }
