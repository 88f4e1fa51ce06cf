"""Per-class recall against a hand count and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, recall_score

from fedge.errors import DataError
from fedge.usecases.metrics import balanced_accuracy, confusion_matrix, per_class_recall


def test_hand_count() -> None:
    y = np.array([0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 1, 1, 0, 2])
    np.testing.assert_allclose(per_class_recall(y, p, 4)[:3], [2 / 3, 1 / 2, 1.0])
    assert np.isnan(per_class_recall(y, p, 4)[3])  # absent class
    assert confusion_matrix(y, p, 3).sum() == 6


def test_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 5, 500), rng.integers(0, 5, 500)
    np.testing.assert_allclose(per_class_recall(y, p, 5), recall_score(y, p, average=None))
    assert balanced_accuracy(y, p, 5) == pytest.approx(balanced_accuracy_score(y, p))


def test_out_of_range_is_refused() -> None:
    with pytest.raises(DataError):
        per_class_recall(np.array([0, 3]), np.array([0, 1]), 3)
