"""FedSGD: every device takes one gradient step on all its local data; the server averages.

The baseline of McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data", arXiv:1602.05629 (FedAvg with one epoch and an unbounded batch). Averaging
the one-step deltas weighted by examples equals one step of full-batch gradient descent over the
participants' union of data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedge.aggregation.base import ClientPlan, ServerState
from fedge.aggregation.optimizers import SGD, ServerOptimizer
from fedge.aggregation.strategy import Strategy

__all__ = ["FedSGD"]


@dataclass(frozen=True)
class FedSGD(Strategy):
    """Federated SGD: one full-batch local step per round, example-weighted server mean."""

    name: ClassVar[str] = "fedsgd"
    server_lr: float = 1.0  # scales the averaged one-step delta

    def optimizer(self) -> ServerOptimizer:
        """Plain server SGD with ``server_lr``."""
        return SGD(lr=self.server_lr)

    def client_plan(self, state: ServerState) -> ClientPlan:
        """Ask for a single gradient step on all local data."""
        return ClientPlan(single_full_batch_step=True)
