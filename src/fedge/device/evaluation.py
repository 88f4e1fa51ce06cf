"""The device's half of federated evaluation: the received model on its own local data.

:func:`evaluate_locally` runs the model version a task names -- before the device trains on it
-- over the device's examples (its local holdout, when it has one) and returns the sums the
update carries (:mod:`fedge.aggregation.evaluation`): examples, correct predictions (the task's
``correct``) and the loss summed per example (the task's ``loss``). Nothing but these three sums
leaves the device.
"""

from __future__ import annotations

import numpy as np

from fedge.aggregation.evaluation import EvaluationSums
from fedge.core.params import Params
from fedge.tasks.base import Task

__all__ = ["evaluate_locally"]


def evaluate_locally(
    task: Task, params: Params, x: np.ndarray, y: np.ndarray, *, batch_size: int = 1024
) -> EvaluationSums | None:
    """Σ examples, Σ correct and Σ loss of ``params`` on (x, y); None when there is no example
    or the model's outputs are not finite (nothing worth reporting)."""
    import torch
    from torch.func import functional_call

    from fedge.core.params import to_torch

    if len(y) == 0:
        return None
    model = task.build_model().eval()
    weights = to_torch(params, copy=True)
    correct = loss_sum = 0.0
    with torch.inference_mode():
        for start in range(0, len(y), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size]))
            yb = torch.from_numpy(np.ascontiguousarray(y[start : start + batch_size]))
            out = functional_call(model, weights, (xb,))
            loss_sum += float(task.loss(out, yb).sum())
            correct += float(task.correct(out, yb).sum())
    if not (np.isfinite(loss_sum) and np.isfinite(correct)) or loss_sum < 0:
        return None
    return EvaluationSums(len(y), correct, loss_sum, 1)
