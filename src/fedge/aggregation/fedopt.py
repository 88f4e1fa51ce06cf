"""FedAdam, FedYogi, FedAdagrad: adaptive server optimizers over the mean delta.

Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar & McMahan 2021, "Adaptive Federated
Optimization", ICLR, arXiv:2003.00295, Algorithm 2. Devices run plain local SGD; the server
treats the example-weighted mean delta as a pseudo-gradient for Adam / Yogi / Adagrad (see
:mod:`fedge.aggregation.optimizers` for the update rules). Defaults are the paper's:
``server_lr`` η = 1e-2, ``beta1`` = 0.9, ``beta2`` = 0.99, ``tau`` = 1e-3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedge.aggregation.optimizers import Adagrad, Adam, ServerOptimizer, Yogi
from fedge.aggregation.strategy import Strategy

__all__ = ["FedAdagrad", "FedAdam", "FedYogi"]


@dataclass(frozen=True)
class FedAdagrad(Strategy):
    """FedAdagrad: ``v ← v + Δ²``."""

    name: ClassVar[str] = "fedadagrad"
    server_lr: float = 1e-2  # η
    beta1: float = 0.9  # first-moment decay, in [0, 1)
    tau: float = 1e-3  # adaptivity: larger is closer to momentum SGD

    def optimizer(self) -> ServerOptimizer:
        """Adagrad over the pseudo-gradient."""
        return Adagrad(lr=self.server_lr, beta1=self.beta1, tau=self.tau)


@dataclass(frozen=True)
class FedAdam(Strategy):
    """FedAdam: ``v ← β₂·v + (1 − β₂)·Δ²``."""

    name: ClassVar[str] = "fedadam"
    server_lr: float = 1e-2  # η
    beta1: float = 0.9  # first-moment decay, in [0, 1)
    beta2: float = 0.99  # second-moment decay, in [0, 1)
    tau: float = 1e-3  # adaptivity: larger is closer to momentum SGD

    def optimizer(self) -> ServerOptimizer:
        """Adam over the pseudo-gradient."""
        return Adam(lr=self.server_lr, beta1=self.beta1, beta2=self.beta2, tau=self.tau)


@dataclass(frozen=True)
class FedYogi(Strategy):
    """FedYogi: ``v ← v − (1 − β₂)·Δ²·sign(v − Δ²)``."""

    name: ClassVar[str] = "fedyogi"
    server_lr: float = 1e-2  # η
    beta1: float = 0.9  # first-moment decay, in [0, 1)
    beta2: float = 0.99  # second-moment decay, in [0, 1)
    tau: float = 1e-3  # adaptivity: larger is closer to momentum SGD

    def optimizer(self) -> ServerOptimizer:
        """Yogi over the pseudo-gradient."""
        return Yogi(lr=self.server_lr, beta1=self.beta1, beta2=self.beta2, tau=self.tau)
