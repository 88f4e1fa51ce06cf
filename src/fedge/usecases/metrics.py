"""Metrics for imbalanced use cases: per-class recall (rare faults and events) and its mean."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedge.errors import DataError

__all__ = ["balanced_accuracy", "confusion_matrix", "per_class_recall"]


def confusion_matrix(
    labels: NDArray[np.int64], predictions: NDArray[np.int64], num_classes: int
) -> NDArray[np.int64]:
    """Counts ``m[true, predicted]``."""
    y, p = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
    if y.shape != p.shape:
        raise DataError(f"{y.size} labels but {p.size} predictions")
    if y.size and (min(y.min(), p.min()) < 0 or max(y.max(), p.max()) >= num_classes):
        raise DataError(f"labels and predictions must lie in 0..{num_classes - 1}")
    flat = np.bincount(y * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def per_class_recall(
    labels: NDArray[np.int64], predictions: NDArray[np.int64], num_classes: int
) -> NDArray[np.float64]:
    """Recall of every class (true positives / examples of the class); NaN for absent classes."""
    m = confusion_matrix(labels, predictions, num_classes)
    support = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(m) / support, np.nan)


def balanced_accuracy(
    labels: NDArray[np.int64], predictions: NDArray[np.int64], num_classes: int
) -> float:
    """Mean per-class recall over the classes present: accuracy that rare classes count in."""
    recall = per_class_recall(labels, predictions, num_classes)
    return float(np.nanmean(recall))
