"""FedAvgM: FedAvg with server momentum, robust to non-IID label skew.

Hsu, Qi & Brown 2019, "Measuring the Effects of Non-Identical Data Distribution for Federated
Visual Classification", arXiv:1909.06335: ``u ← β·u + Δ;  x ← x + η·u`` where Δ is the
example-weighted mean delta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedge.aggregation.optimizers import SGD, ServerOptimizer
from fedge.aggregation.strategy import Strategy

__all__ = ["FedAvgM"]


@dataclass(frozen=True)
class FedAvgM(Strategy):
    """Federated Averaging with server momentum."""

    name: ClassVar[str] = "fedavgm"
    server_lr: float = 1.0  # η
    momentum: float = 0.9  # β, in [0, 1)

    def optimizer(self) -> ServerOptimizer:
        """Server SGD with momentum."""
        return SGD(lr=self.server_lr, momentum=self.momentum)
