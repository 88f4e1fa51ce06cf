"""The per-device reference trainer: a plain PyTorch loop over one device's data.

This is what a real device runs, and what the vectorised simulator is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fedge.core.params import Params, from_module, load_into_module
from fedge.core.tree import tree_sub
from fedge.training.plan import LocalTrainingConfig, batch_schedule, example_weights
from fedge.training.sgd import PlainSGD

if TYPE_CHECKING:
    from fedge.tasks.base import Task

__all__ = ["LocalResult", "train_local"]


@dataclass(frozen=True)
class LocalResult:
    """A device's round: its update (local − global), example count and mean training loss."""

    delta: Params
    num_examples: int
    loss: float


def train_local(
    task: Task,
    global_params: Params,
    x: np.ndarray,
    y: np.ndarray,
    config: LocalTrainingConfig,
    rng: np.random.Generator,
) -> LocalResult:
    """Train a fresh copy of the task's model from ``global_params`` on (x, y)."""
    import torch

    model = task.build_model()
    load_into_module(model, global_params)
    anchor = [p.detach().clone() for p in model.parameters()]
    optimizer = PlainSGD(  # torch.optim.SGD's update, without its first-use import of dynamo
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    schedule = batch_schedule(len(yt), config.batch_size, config.epochs, rng)
    weights = example_weights(y, config.class_weighting)
    wt = None if weights is None else torch.from_numpy(weights)
    losses = []
    for row in schedule:
        idx = torch.from_numpy(row[row >= 0])
        optimizer.zero_grad()
        per_example = task.loss(model(xt[idx]), yt[idx])
        # with class weights: the batch's weighted mean (see example_weights)
        loss = per_example.mean() if wt is None else (per_example * wt[idx]).sum() / wt[idx].sum()
        losses.append(float(loss.detach()))
        if config.proximal_mu > 0:
            prox = sum(
                ((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True)
            )
            loss = loss + 0.5 * config.proximal_mu * prox
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return LocalResult(
        delta=tree_sub(from_module(model), global_params),
        num_examples=len(yt),
        loss=float(np.mean(losses)),
    )
