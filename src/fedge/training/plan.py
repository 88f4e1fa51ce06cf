"""What a device does locally in one round, and the order it visits its examples in.

The client optimizer (SGD with optional momentum and weight decay, optional FedProx proximal
term) is configured here; the server optimizer lives in :mod:`fedge.aggregation`. Both the
per-device reference trainer and the vectorised simulator take their batches from
:func:`batch_schedule`, so the two paths see the same examples in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from fedge.errors import ConfigError

__all__ = [
    "ClassWeighting",
    "LocalTrainingConfig",
    "batch_schedule",
    "device_rng",
    "example_weights",
]

ClassWeighting = Literal["none", "balanced"]


@dataclass(frozen=True)
class LocalTrainingConfig:
    """The client optimizer and its schedule."""

    epochs: int = 1  # passes over the local data per round (E)
    batch_size: int | None = 10  # B; None means the whole local data set in one batch
    lr: float = 0.1  # client learning rate
    momentum: float = 0.0  # client SGD momentum (torch semantics, no dampening)
    weight_decay: float = 0.0  # L2 penalty added to the gradient
    proximal_mu: float = 0.0  # FedProx μ: adds μ/2·‖w − w_global‖² to the local loss
    # "balanced": weigh each example by the inverse frequency of its class in this device's own
    # data (see example_weights), so rare classes (faults, events) are not ignored
    class_weighting: ClassWeighting = "none"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"local epochs must be ≥ 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(
                f"batch_size must be ≥ 1 (or omitted for full batch), got {self.batch_size}"
            )
        if not (self.lr > 0 and np.isfinite(self.lr)):
            raise ConfigError(f"client lr must be a positive number, got {self.lr}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"client momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0 or self.proximal_mu < 0:
            raise ConfigError("weight_decay and proximal_mu must be ≥ 0")
        if self.class_weighting not in ("none", "balanced"):
            raise ConfigError(
                f"class_weighting must be 'none' or 'balanced', got {self.class_weighting!r}"
            )

    def with_plan(self, *, proximal_mu: float, single_full_batch_step: bool) -> LocalTrainingConfig:
        """Apply what the strategy asks of clients (FedProx μ, FedSGD's single full-batch step)."""
        cfg = replace(self, proximal_mu=max(self.proximal_mu, proximal_mu))
        if single_full_batch_step:
            cfg = replace(cfg, epochs=1, batch_size=None, momentum=0.0)
        return cfg


def example_weights(
    labels: NDArray[np.int64], weighting: ClassWeighting
) -> NDArray[np.float32] | None:
    """Per-example loss weights for one device's own labels; ``None`` means all equal.

    ``"balanced"``: example i weighs n / (k · n_{y_i}), where n is the device's example count,
    k the number of classes present on it and n_c the count of class c, so every class present
    carries the same total weight (a class a device never saw gets none: nothing leaves the
    device to compute weights from). Trainers take each batch's *weighted mean* loss, so a step's
    size stays that of a plain mean while a rare example counts as much as its class's share.
    """
    if weighting == "none":
        return None
    y = np.asarray(labels, dtype=np.int64)
    if y.size == 0:
        raise ConfigError("a device needs at least one example to train")
    counts = np.bincount(y)
    present = int(np.count_nonzero(counts))
    return (y.size / (present * counts[y])).astype(np.float32)


def device_rng(seed: int, round_number: int, device_index: int) -> np.random.Generator:
    """The generator a virtual device shuffles with in a round: independent per (seed, round, device)."""
    return np.random.default_rng([seed, round_number, device_index])


def batch_schedule(
    num_examples: int, batch_size: int | None, epochs: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Local example positions per step, shape (steps, B), padded with −1 in the last batch.

    Each epoch is a fresh permutation cut into ⌈n / B⌉ batches.
    """
    if num_examples < 1:
        raise ConfigError("a device needs at least one example to train")
    b = num_examples if batch_size is None else min(batch_size, num_examples)
    steps_per_epoch = -(-num_examples // b)
    out = np.full((epochs * steps_per_epoch, b), -1, dtype=np.int64)
    for e in range(epochs):
        perm = rng.permutation(num_examples)
        padded = np.full(steps_per_epoch * b, -1, dtype=np.int64)
        padded[:num_examples] = perm
        out[e * steps_per_epoch : (e + 1) * steps_per_epoch] = padded.reshape(steps_per_epoch, b)
    return out
