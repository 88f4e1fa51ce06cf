"""How well a score ranks the rare class: AUROC, PR-AUC and recall at a fixed false-alarm rate.

An anomaly or early-warning model is used as a *score* (P(abnormal) per window): an alarm fires
when the score passes a threshold that the operator sets from the false alarms they can afford.
Accuracy at the arg-max says little about that use; these metrics read the whole ranking:

- **AUROC**: the probability that a random positive window scores above a random negative one
  (ties count one half), the Mann-Whitney U statistic divided by P·N;
- **PR-AUC** as average precision, Σₙ (Rₙ − Rₙ₋₁)·Pₙ over the distinct thresholds (the step-wise
  area scikit-learn's ``average_precision_score`` computes): it falls with the rare class's
  prevalence, so it is compared with the prevalence, its value for a random score;
- **recall at a false-alarm rate** α: the largest share of positives caught by a threshold that
  raises alarms on at most α of the negatives (the ROC curve read at FPR = α).

Labels are 0/1 with 1 the rare class; scores are any real numbers, larger meaning more likely 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.errors import DataError

__all__ = [
    "RankingScores",
    "average_precision",
    "ranking_scores",
    "recall_at_false_alarm",
    "roc_auc",
]


def _checked(
    labels: NDArray[np.int64], scores: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise DataError(f"{y.size} labels but {s.size} scores")
    if not np.isin(y, (0, 1)).all():
        raise DataError("labels must be 0 (negative) or 1 (the rare positive class)")
    if not np.isfinite(s).all():
        raise DataError("scores must be finite (a NaN or inf score cannot be ranked)")
    positives = int(y.sum())
    if positives in (0, y.size):
        raise DataError(
            f"ranking metrics need both classes; got {positives} positives of {y.size} labels"
        )
    return y.astype(np.int64), s


def _curve(
    y: NDArray[np.int64], s: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """True and false positives at every distinct threshold, highest threshold first."""
    order = np.argsort(-s, kind="mergesort")
    ranked, hits = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # end of each tie group
    tps = np.cumsum(hits)[last]
    return tps, (last + 1) - tps


def roc_auc(labels: NDArray[np.int64], scores: NDArray[np.float64]) -> float:
    """Area under the ROC curve (Mann-Whitney U / (P·N), tied scores count one half)."""
    y, s = _checked(labels, scores)
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]  # 1-based ranks, ties averaged
    p = int(y.sum())
    n = y.size - p
    return float((ranks[y == 1].sum() - p * (p + 1) / 2.0) / (p * n))


def average_precision(labels: NDArray[np.int64], scores: NDArray[np.float64]) -> float:
    """PR-AUC as average precision: Σ (recall step) × precision over the distinct thresholds."""
    y, s = _checked(labels, scores)
    tps, fps = _curve(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def recall_at_false_alarm(
    labels: NDArray[np.int64], scores: NDArray[np.float64], rate: float
) -> float:
    """The largest recall of a threshold whose false-alarm rate (FPR) is at most ``rate``."""
    if not 0.0 <= rate <= 1.0:
        raise DataError(f"the false-alarm rate must be in [0, 1], got {rate}")
    y, s = _checked(labels, scores)
    tps, fps = _curve(y, s)
    allowed = fps / fps[-1] <= rate
    return float(tps[allowed].max() / tps[-1]) if allowed.any() else 0.0


@dataclass(frozen=True)
class RankingScores:
    """AUROC, PR-AUC (against the prevalence) and recall at ``false_alarm_rate``."""

    auroc: float
    pr_auc: float
    prevalence: float  # share of positives: the PR-AUC of a random score
    false_alarm_rate: float
    recall_at_false_alarm: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "auroc": self.auroc,
            "pr_auc": self.pr_auc,
            "prevalence": self.prevalence,
            "false_alarm_rate": self.false_alarm_rate,
            "recall_at_false_alarm": self.recall_at_false_alarm,
        }


def ranking_scores(
    labels: NDArray[np.int64], scores: NDArray[np.float64], false_alarm_rate: float = 0.05
) -> RankingScores:
    """All three ranking metrics of ``scores`` for the 0/1 ``labels``."""
    y, s = _checked(labels, scores)
    return RankingScores(
        auroc=roc_auc(y, s),
        pr_auc=average_precision(y, s),
        prevalence=float(y.mean()),
        false_alarm_rate=false_alarm_rate,
        recall_at_false_alarm=recall_at_false_alarm(y, s, false_alarm_rate),
    )
