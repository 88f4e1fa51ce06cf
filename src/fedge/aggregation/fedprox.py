"""FedProx: FedAvg whose devices add a proximal term to their local objective.

Li, Sahu, Zaheer, Sanjabi, Talwalkar & Smith 2020, "Federated Optimization in Heterogeneous
Networks", MLSys, arXiv:1812.06127. Each device minimises ``F_k(w) + (μ/2)·‖w − w_global‖²``,
which keeps local models near the global one under heterogeneity; the server side is FedAvg.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedge.aggregation.base import ClientPlan, ServerState
from fedge.aggregation.fedavg import FedAvg
from fedge.errors import ConfigError

__all__ = ["FedProx"]


@dataclass(frozen=True)
class FedProx(FedAvg):
    """FedAvg plus a proximal term of strength ``proximal_mu`` in every local loss."""

    name: ClassVar[str] = "fedprox"
    proximal_mu: float = 0.01  # μ ≥ 0; 0 is plain FedAvg

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (np.isfinite(self.proximal_mu) and self.proximal_mu >= 0):
            raise ConfigError(f"proximal_mu must be a finite number >= 0, got {self.proximal_mu}")

    def client_plan(self, state: ServerState) -> ClientPlan:
        """Ask devices to add (mu/2)·‖w − w_global‖² to their loss."""
        return ClientPlan(proximal_mu=self.proximal_mu)
