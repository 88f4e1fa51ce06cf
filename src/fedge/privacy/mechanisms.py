"""Gaussian mechanisms: central DP-FedAvg and local DP on the device.

**Central DP** is DP-FedAvg, McMahan, Ramage, Talwar, Zhang, "Learning Differentially Private
Recurrent Language Models" (ICLR 2018, arXiv:1710.06963). Each selected device clips its update to
L2 norm C; the coordinator adds N(0, (z·C)²) to every coordinate of the *sum* and divides by the
*expected* number of participants (the paper's fixed-denominator estimator f̃_f), not the number
that happened to report. The denominator must not depend on the data, otherwise the sensitivity of
the average is no longer C/m.

**Local DP** is for devices that trust nobody: the device adds N(0, (z_local·C)²) to its own clipped
update before it leaves. Its guarantee holds against the server too, but it is per device and
without amplification by sampling, so for the same noise its ε is far larger (see
:func:`fedge.privacy.accountant.local_epsilon`); and every device's noise reaches the average.

The noise for the discrete (secure-aggregation) variant lives in :mod:`fedge.privacy.distributed`.
All functions are pure and take their generator (use :func:`fedge.privacy.rng.secure_generator`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from fedge.core.params import Params
from fedge.errors import ConfigError

__all__ = [
    "add_gaussian_noise",
    "dp_fedavg_mean",
    "dp_fedavg_mean_tree",
    "local_dp_update",
]


def _check(clip_norm: float, noise_multiplier: float) -> None:
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ConfigError(f"clip_norm must be a finite number > 0 (e.g. 1.0), got {clip_norm}")
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ConfigError(
            f"noise_multiplier must be a finite number >= 0 (e.g. 1.0), got {noise_multiplier}"
        )


def add_gaussian_noise(
    values: NDArray[np.floating], stddev: float, rng: np.random.Generator
) -> NDArray[np.float32]:
    """``values`` + i.i.d. N(0, stddev²) noise (drawn in float64), returned as float32."""
    if not (math.isfinite(stddev) and stddev >= 0):
        raise ConfigError(f"noise stddev must be a finite number >= 0, got {stddev}")
    x = np.asarray(values, dtype=np.float64)
    return (x + rng.normal(0.0, stddev, size=x.shape)).astype(np.float32)


def dp_fedavg_mean(
    sum_of_clipped: NDArray[np.floating],
    expected_devices: float,
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> NDArray[np.float32]:
    """(Σ clipped updates + N(0, (z·C)²)) / expected_devices: DP-FedAvg's fixed-denominator mean."""
    _check(clip_norm, noise_multiplier)
    if not (math.isfinite(expected_devices) and expected_devices > 0):
        raise ConfigError(
            f"expected_devices must be > 0 (the planned devices per round), got {expected_devices}"
        )
    noised = add_gaussian_noise(sum_of_clipped, noise_multiplier * clip_norm, rng)
    return (noised.astype(np.float64) / expected_devices).astype(np.float32)


def dp_fedavg_mean_tree(
    sum_of_clipped: Mapping[str, np.ndarray],
    expected_devices: float,
    clip_norm: float,
    noise_multiplier: float,
    rng: np.random.Generator,
) -> Params:
    """:func:`dp_fedavg_mean` applied to every tensor of a ``Params`` tree (one noise draw each)."""
    return {
        name: dp_fedavg_mean(tensor, expected_devices, clip_norm, noise_multiplier, rng)
        for name, tensor in sum_of_clipped.items()
    }


def local_dp_update(
    clipped_update: NDArray[np.floating],
    clip_norm: float,
    local_noise_multiplier: float,
    rng: np.random.Generator,
) -> NDArray[np.float32]:
    """A device's clipped update + N(0, (z_local·C)²): local DP before anything leaves the device."""
    _check(clip_norm, local_noise_multiplier)
    return add_gaussian_noise(clipped_update, local_noise_multiplier * clip_norm, rng)
