"""Class-balanced local training: weights from the device's own labels, rare classes learnt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedge.core.params import from_module
from fedge.errors import ConfigError
from fedge.tasks import get_task
from fedge.training import LocalTrainingConfig, example_weights, train_local
from fedge.usecases.scores import class_scores


def test_balanced_weights_give_every_present_class_the_same_total() -> None:
    y = np.array([0] * 90 + [1] * 8 + [3] * 2, dtype=np.int64)
    w = example_weights(y, "balanced")
    assert w is not None and w.dtype == np.float32 and w.shape == y.shape
    totals = [float(w[y == c].sum()) for c in (0, 1, 3)]
    np.testing.assert_allclose(totals, [100 / 3] * 3, rtol=1e-6)  # n / k each
    assert float(w.mean()) == pytest.approx(1.0)  # the mean weight stays 1
    assert w[y == 3][0] == pytest.approx(45 * w[y == 0][0])
    assert example_weights(y, "none") is None


def test_refused_settings() -> None:
    with pytest.raises(ConfigError, match="class_weighting"):
        LocalTrainingConfig(class_weighting="inverse")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="at least one example"):
        example_weights(np.zeros(0, dtype=np.int64), "balanced")


def test_balanced_loss_catches_the_rare_fault_plain_loss_misses() -> None:
    """One device's machines: 3% of windows faulty. Plain CE learns "always healthy"; the
    balanced loss, computed from the device's own labels only, learns the fault."""
    task = get_task("maintenance_warning")
    train, test = task.load_data()
    rng = np.random.default_rng(0)
    healthy = np.flatnonzero(train.y == 0)
    faulty = np.flatnonzero(train.y == 1)
    rows = np.concatenate([rng.choice(healthy, 600, replace=False), faulty[:20]])
    torch.manual_seed(0)
    initial = from_module(task.build_model())
    recall = {}
    for weighting in ("none", "balanced"):
        cfg = LocalTrainingConfig(epochs=3, batch_size=16, lr=0.1, class_weighting=weighting)
        result = train_local(
            task, initial, train.x[rows], train.y[rows], cfg, np.random.default_rng(1)
        )
        params = {k: initial[k] + result.delta[k] for k in initial}
        recall[weighting] = class_scores(task, params, test.x, test.y).recall[1]
    assert recall["balanced"] > recall["none"] + 0.2
