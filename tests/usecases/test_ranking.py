"""Ranking metrics of an anomaly score against a hand count and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from fedge.errors import DataError
from fedge.usecases.ranking import (
    average_precision,
    ranking_scores,
    recall_at_false_alarm,
    roc_auc,
)


def _sklearn_recall_at(y: np.ndarray, s: np.ndarray, rate: float) -> float:
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return float(tpr[fpr <= rate].max())


def test_hand_count() -> None:
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert roc_auc(y, s) == pytest.approx(0.75)  # 3 of the 4 (positive, negative) pairs in order
    # thresholds 0.8 (P=1, R=½), 0.4 (P=½), 0.35 (P=⅔, R=1): AP = ½·1 + ½·⅔
    assert average_precision(y, s) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert recall_at_false_alarm(y, s, 0.0) == pytest.approx(0.5)
    assert recall_at_false_alarm(y, s, 0.5) == pytest.approx(1.0)
    tied = np.array([0.5, 0.5, 0.5, 0.5])
    assert roc_auc(y, tied) == pytest.approx(0.5)  # ties count one half
    assert recall_at_false_alarm(y, tied, 0.05) == 0.0  # any alarm flags every negative


@pytest.mark.parametrize("seed", range(6))
def test_matches_sklearn_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 2_000))
    y = (rng.random(n) < rng.uniform(0.02, 0.5)).astype(np.int64)
    y[:2] = (0, 1)  # both classes present
    s = rng.normal(size=n) + rng.uniform(0, 2) * y
    if seed % 2:  # coarse scores: many ties, as a calibrated probability rounded for display
        s = np.round(s, 1)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    for rate in (0.0, 0.01, 0.05, 0.2, 1.0):
        assert recall_at_false_alarm(y, s, rate) == pytest.approx(
            _sklearn_recall_at(y, s, rate), abs=1e-12
        )
    both = ranking_scores(y, s, 0.05)
    assert both.auroc == roc_auc(y, s) and both.pr_auc == average_precision(y, s)
    assert both.prevalence == pytest.approx(y.mean())
    assert set(both.as_dict()) == {
        "auroc",
        "pr_auc",
        "prevalence",
        "false_alarm_rate",
        "recall_at_false_alarm",
    }


def test_a_perfect_and_a_reversed_score() -> None:
    y = np.array([0] * 90 + [1] * 10)
    perfect = y + np.linspace(0, 0.5, 100)
    assert roc_auc(y, perfect) == 1.0 and average_precision(y, perfect) == 1.0
    assert recall_at_false_alarm(y, perfect, 0.0) == 1.0
    assert roc_auc(y, -perfect) == 0.0
    assert recall_at_false_alarm(y, -perfect, 0.05) == 0.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(DataError, match="both classes"):
        roc_auc(np.zeros(5, np.int64), np.arange(5.0))
    with pytest.raises(DataError, match="0 \\(negative\\) or 1"):
        average_precision(np.array([0, 2]), np.array([0.1, 0.2]))
    with pytest.raises(DataError, match="3 labels but 2 scores"):
        roc_auc(np.array([0, 1, 0]), np.array([0.1, 0.2]))
    with pytest.raises(DataError, match="finite"):
        roc_auc(np.array([0, 1]), np.array([0.1, np.nan]))
    with pytest.raises(DataError, match="false-alarm rate"):
        recall_at_false_alarm(np.array([0, 1]), np.array([0.1, 0.2]), 1.5)
