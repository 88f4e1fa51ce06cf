"""Evaluation of one global model on a set of examples (centralised or on devices' data)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import NDArray
from torch.func import functional_call

if TYPE_CHECKING:
    from torch import nn

    from fedge.tasks.base import Task

__all__ = ["Evaluation", "evaluate"]


@dataclass(frozen=True)
class Evaluation:
    """Mean loss and accuracy over ``num_examples`` examples, and per-class recall if known."""

    loss: float
    accuracy: float
    num_examples: int
    recall: NDArray[np.float64] | None = None  # per class (NaN: absent); tasks with class_recall

    @property
    def balanced_accuracy(self) -> float | None:
        """Mean recall over the classes present (None without per-class recall)."""
        if self.recall is None or bool(np.isnan(self.recall).all()):
            return None
        return float(np.nanmean(self.recall))

    def recall_list(self) -> list[float | None] | None:
        """Per-class recall as JSON-ready floats (None for an absent class)."""
        if self.recall is None:
            return None
        return [None if math.isnan(r) else float(r) for r in self.recall]


def evaluate(
    task: Task,
    model: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 4096,
) -> Evaluation:
    """Loss and accuracy of ``model`` with ``params`` on (x, y), in batches.

    With ``task.class_recall`` set, the recall of every class too (from all batches' outputs).
    """
    if len(y) == 0:
        return Evaluation(float("nan"), float("nan"), 0)
    loss_sum = 0.0
    correct = 0.0
    outputs: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(y), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            out = functional_call(model, params, (xb,))
            loss_sum += float(task.loss(out, yb).sum())
            correct += float(task.correct(out, yb).sum())
            if task.class_recall is not None:
                outputs.append(out)
    recall = None
    if task.class_recall is not None:
        recall = np.asarray(task.class_recall(torch.cat(outputs), y), dtype=np.float64)
    return Evaluation(loss_sum / len(y), correct / len(y), len(y), recall)
