"""L2 clipping of device updates, fixed and adaptive.

Fixed clipping bounds each device's contribution (its whole update, seen as one vector) to L2 norm
C, which is the sensitivity that DP-FedAvg's noise is calibrated to (McMahan et al. 2018,
arXiv:1710.06963).

Adaptive clipping follows Andrew, Thakkar, McMahan, Ramaswamy, "Differentially Private Learning
with Adaptive Clipping" (NeurIPS 2021, arXiv:1905.03871). Each round every participant reports the
bit ``b_i = 1[‖Δ_i‖ ≤ C]``; the server forms a *noisy* estimate of the fraction of updates that
were not clipped,

    b̃ = (Σ_i (b_i − ½) + N(0, σ_b²)) / m + ½            (m = expected participants),

and moves C geometrically towards the target quantile γ:

    C ← C · exp(−η_C · (b̃ − γ)).

Centring the bits makes the count query's add/remove sensitivity ½, so its effective noise
multiplier is 2σ_b. Theorem 1 of the paper: noising the update sum with multiplier
z_Δ = (z⁻² − (2σ_b)⁻²)^(−½) keeps the *pair* of queries exactly as private as one Gaussian query
with multiplier z (see :func:`update_noise_multiplier`). The state is an explicit frozen dataclass.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedge.core.params import Params
from fedge.core.tree import tree_clip_by_global_norm
from fedge.errors import ConfigError

__all__ = [
    "AdaptiveClipState",
    "clip_rows",
    "clip_tree",
    "clip_update",
    "noisy_unclipped_fraction",
    "update_clip",
    "update_noise_multiplier",
]


def _check_clip(clip_norm: float) -> None:
    if not (math.isfinite(clip_norm) and clip_norm > 0):
        raise ConfigError(f"clip_norm must be a finite number > 0 (e.g. 1.0), got {clip_norm}")


def clip_update(
    update: NDArray[np.floating], clip_norm: float
) -> tuple[NDArray[np.float32], float]:
    """Scale a whole update so its L2 norm is at most ``clip_norm``; returns (clipped, norm)."""
    _check_clip(clip_norm)
    flat = np.asarray(update, dtype=np.float64)
    norm = float(np.sqrt(np.vdot(flat, flat)))
    factor = 1.0 if norm <= clip_norm else clip_norm / norm
    return (flat * factor).astype(np.float32), norm


def clip_tree(update: Mapping[str, np.ndarray], clip_norm: float) -> tuple[Params, float]:
    """Clip a ``Params`` tree by its global L2 norm; returns (clipped tree, original norm)."""
    _check_clip(clip_norm)
    return tree_clip_by_global_norm(update, clip_norm)


def clip_rows(
    matrix: NDArray[np.floating], clip_norm: float
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Clip each row of a (devices, params) matrix to L2 norm ``clip_norm``; (clipped, norms)."""
    _check_clip(clip_norm)
    m = np.asarray(matrix)
    if m.ndim != 2:
        raise ValueError(f"clip_rows expects a 2-D (devices, params) matrix, got shape {m.shape}")
    norms = np.sqrt(np.einsum("ij,ij->i", m, m, dtype=np.float64))
    factors = np.minimum(1.0, clip_norm / np.maximum(norms, np.finfo(np.float64).tiny))
    clipped = (m * factors[:, None]).astype(np.float32)
    return clipped, norms


@dataclass(frozen=True)
class AdaptiveClipState:
    """Adaptive clipping state (Andrew et al. 2021): current C, target quantile γ, step η_C."""

    clip_norm: float
    target_quantile: float = 0.5  # γ: the fraction of updates that should end up unclipped
    learning_rate: float = 0.2  # η_C: the paper's default for the geometric update

    def __post_init__(self) -> None:
        _check_clip(self.clip_norm)
        if not 0.0 < self.target_quantile < 1.0:
            raise ConfigError(
                f"target_quantile must be in (0, 1) (e.g. 0.5), got {self.target_quantile}"
            )
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"learning_rate must be > 0 (e.g. 0.2), got {self.learning_rate}")


def noisy_unclipped_fraction(
    norms: NDArray[np.floating],
    clip_norm: float,
    expected_devices: float,
    clip_count_stddev: float,
    rng: np.random.Generator,
) -> float:
    """Private estimate b̃ of the fraction of update norms ≤ ``clip_norm`` (centred bits + noise)."""
    _check_clip(clip_norm)
    if not expected_devices > 0:
        raise ConfigError(f"expected_devices must be > 0, got {expected_devices}")
    if not clip_count_stddev >= 0:
        raise ConfigError(f"clip_count_stddev must be >= 0, got {clip_count_stddev}")
    bits = (np.asarray(norms, dtype=np.float64) <= clip_norm).astype(np.float64)
    centred_sum = float(np.sum(bits - 0.5)) + float(rng.normal(0.0, clip_count_stddev))
    return centred_sum / expected_devices + 0.5


def update_clip(state: AdaptiveClipState, noisy_unclipped_fraction: float) -> AdaptiveClipState:
    """Geometric step C ← C·exp(−η_C(b̃ − γ)) given the noisy unclipped fraction b̃."""
    step = -state.learning_rate * (noisy_unclipped_fraction - state.target_quantile)
    return dataclasses.replace(state, clip_norm=state.clip_norm * math.exp(step))


def update_noise_multiplier(noise_multiplier: float, clip_count_stddev: float) -> float:
    """z_Δ = (z⁻² − (2σ_b)⁻²)^(−½): update noise that keeps the total privacy at multiplier z."""
    if not noise_multiplier > 0:
        raise ConfigError(f"noise_multiplier must be > 0, got {noise_multiplier}")
    if not 2.0 * clip_count_stddev > noise_multiplier:
        raise ConfigError(
            f"adaptive clipping needs clip_count_stddev > noise_multiplier / 2 "
            f"(= {noise_multiplier / 2:g}), got {clip_count_stddev:g}; raise clip_count_stddev "
            "(the paper suggests expected devices per round / 20)"
        )
    inv = noise_multiplier**-2 - (2.0 * clip_count_stddev) ** -2
    return float(inv**-0.5)
