"""FedAvg: example-weighted mean of local deltas, applied with a server learning rate.

McMahan, Moore, Ramage, Hampson & Agüera y Arcas 2017, "Communication-Efficient Learning of
Deep Networks from Decentralized Data", AISTATS, arXiv:1602.05629 (Algorithm 1). With
``server_lr = 1`` the new global model is the weighted mean of the local models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedge.aggregation.optimizers import SGD, ServerOptimizer
from fedge.aggregation.strategy import Strategy

__all__ = ["FedAvg"]


@dataclass(frozen=True)
class FedAvg(Strategy):
    """Federated Averaging: ``x ← x + server_lr · Σ nₖΔₖ / Σ nₖ``."""

    name: ClassVar[str] = "fedavg"
    server_lr: float = 1.0  # 1.0 reproduces the paper

    def optimizer(self) -> ServerOptimizer:
        """Plain server SGD with ``server_lr``."""
        return SGD(lr=self.server_lr)
