"""Per-class scores of a model and the always-majority baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedge.core.params import from_module
from fedge.errors import DataError
from fedge.tasks import get_task
from fedge.usecases.scores import class_scores, logits_recall, majority_scores, positive_scores


def test_majority_baseline_catches_only_the_majority() -> None:
    y = np.array([0] * 8 + [1, 2], dtype=np.int64)
    base = majority_scores(y, 4)
    assert base.accuracy == pytest.approx(0.8)
    np.testing.assert_array_equal(base.recall[:3], [1.0, 0.0, 0.0])
    assert np.isnan(base.recall[3])  # absent class: not counted
    assert base.macro_recall == pytest.approx(1 / 3)
    assert base.as_dict() == {
        "accuracy": pytest.approx(0.8),
        "balanced_accuracy": pytest.approx(1 / 3),
        "recall": [1.0, 0.0, 0.0, None],
    }
    line = base.describe(("healthy", "a", "b", "c"))
    assert line.startswith("healthy 1.00 · a 0.00 · b 0.00 · c –") and "macro 0.333" in line
    with pytest.raises(DataError, match="class names"):
        base.describe(("healthy",))
    with pytest.raises(DataError, match="no labels"):
        majority_scores(np.zeros(0, dtype=np.int64), 2)


def test_class_scores_agree_with_the_model_predictions() -> None:
    task = get_task("maintenance")
    _, test = task.load_data()
    torch.manual_seed(0)
    model = task.build_model()
    with torch.no_grad():
        predicted = model(torch.from_numpy(test.x)).argmax(dim=1).numpy()
    scores = class_scores(task, from_module(model), test.x, test.y)
    assert scores.accuracy == pytest.approx(float(np.mean(predicted == test.y)))
    for c in range(task.num_classes):
        assert scores.recall[c] == pytest.approx(float(np.mean(predicted[test.y == c] == c)))


def test_logits_recall_is_the_recall_of_the_arg_max() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 1])
    recall = logits_recall(logits, labels, 4)
    np.testing.assert_allclose(recall[:3], [1.0, 1 / 3, np.nan])
    assert np.isnan(recall[3])


def test_positive_scores_are_the_probability_of_class_one() -> None:
    task = get_task("wearables_anomaly")
    _, test = task.load_data()
    torch.manual_seed(0)
    model = task.build_model()
    x = test.x[:64]
    scores = positive_scores(task, from_module(model), x)
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(x)), dim=1)[:, 1].numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert scores.dtype == np.float64 and ((scores >= 0) & (scores <= 1)).all()
    with pytest.raises(DataError, match="a score needs 2"):
        positive_scores(
            get_task("maintenance"), from_module(get_task("maintenance").build_model()), x
        )
