"""How well a model catches every class: accuracy, per-class recall and their baseline.

On imbalanced use cases accuracy alone flatters a model that always answers "healthy" (0.895
on the maintenance test set); :class:`ClassScores` carries the recall of every class and their
mean (macro recall, a.k.a. balanced accuracy), and :func:`majority_scores` is the baseline a
useful model must beat. :func:`logits_recall` is the use-case tasks' ``Task.class_recall`` hook
(the simulator's per-round balanced accuracy); :func:`positive_scores` reads a binary model as a
score, P(class 1) per window, for :mod:`fedge.usecases.ranking`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from fedge.errors import DataError
from fedge.usecases.metrics import per_class_recall

if TYPE_CHECKING:
    import torch

    from fedge.tasks.base import Task

__all__ = ["ClassScores", "class_scores", "logits_recall", "majority_scores", "positive_scores"]


@dataclass(frozen=True)
class ClassScores:
    """Accuracy and the recall of each class (NaN for a class absent from the labels)."""

    accuracy: float
    recall: NDArray[np.float64]

    @property
    def macro_recall(self) -> float:
        """Mean recall over the classes present (balanced accuracy)."""
        return float(np.nanmean(self.recall))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: accuracy, balanced_accuracy and recall (``None`` for absent classes)."""
        return {
            "accuracy": self.accuracy,
            "balanced_accuracy": self.macro_recall,
            "recall": [None if np.isnan(r) else float(r) for r in self.recall],
        }

    def describe(self, class_names: Sequence[str]) -> str:
        """One line: ``name recall`` per class, then the macro recall and accuracy."""
        if len(class_names) != len(self.recall):
            raise DataError(f"{len(class_names)} class names for {len(self.recall)} classes")
        each = " · ".join(
            f"{name} {'–' if np.isnan(r) else f'{r:.2f}'}"
            for name, r in zip(class_names, self.recall, strict=True)
        )
        return f"{each} · macro {self.macro_recall:.3f} · accuracy {self.accuracy:.3f}"


def _scores(labels: NDArray[np.int64], predictions: NDArray[np.int64], k: int) -> ClassScores:
    return ClassScores(
        accuracy=float(np.mean(predictions == labels)) if labels.size else float("nan"),
        recall=per_class_recall(labels, predictions, k),
    )


def logits_recall(
    logits: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> NDArray[np.float64]:
    """Per-class recall of the arg-max of ``logits`` (NaN for a class absent from ``labels``)."""
    predicted = logits.argmax(dim=-1).numpy().astype(np.int64)
    return per_class_recall(labels.numpy().astype(np.int64), predicted, num_classes)


def _logits(task: Task, params: Mapping[str, np.ndarray], x: NDArray[np.float32]) -> torch.Tensor:
    import torch

    from fedge.core.params import load_into_module

    model = task.build_model()
    load_into_module(model, params)
    model.eval()
    with torch.no_grad():
        out: torch.Tensor = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return out


def class_scores(
    task: Task, params: Mapping[str, np.ndarray], x: NDArray[np.float32], y: NDArray[np.int64]
) -> ClassScores:
    """Scores of the task's model with ``params`` on (x, y) (arg-max class)."""
    predicted = _logits(task, params, x).argmax(dim=1).numpy().astype(np.int64)
    return _scores(np.asarray(y, dtype=np.int64), predicted, task.num_classes)


def positive_scores(
    task: Task, params: Mapping[str, np.ndarray], x: NDArray[np.float32]
) -> NDArray[np.float64]:
    """P(class 1) per row of a binary task's model: the anomaly / early-warning score."""
    if task.num_classes != 2:
        raise DataError(f"task {task.name!r} has {task.num_classes} classes; a score needs 2")
    probabilities = _logits(task, params, x).softmax(dim=1)
    return probabilities[:, 1].numpy().astype(np.float64)


def majority_scores(y: NDArray[np.int64], num_classes: int) -> ClassScores:
    """The baseline: always answering the most common class of ``y``."""
    labels = np.asarray(y, dtype=np.int64)
    if labels.size == 0:
        raise DataError("no labels to take the majority of")
    majority = int(np.bincount(labels, minlength=num_classes).argmax())
    return _scores(labels, np.full_like(labels, majority), num_classes)
