"""Evaluation of one global model on a set of examples (centralised or on devices' data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch.func import functional_call

if TYPE_CHECKING:
    from torch import nn

    from fedge.tasks.base import Task

__all__ = ["Evaluation", "evaluate"]


@dataclass(frozen=True)
class Evaluation:
    """Mean loss and accuracy over ``num_examples`` examples."""

    loss: float
    accuracy: float
    num_examples: int


def evaluate(
    task: Task,
    model: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 4096,
) -> Evaluation:
    """Loss and accuracy of ``model`` with ``params`` on (x, y), in batches."""
    if len(y) == 0:
        return Evaluation(float("nan"), float("nan"), 0)
    loss_sum = 0.0
    correct = 0.0
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            out = functional_call(model, params, (xb,))
            loss_sum += float(task.loss(out, yb).sum())
            correct += float(task.correct(out, yb).sum())
    return Evaluation(loss_sum / len(y), correct / len(y), len(y))
