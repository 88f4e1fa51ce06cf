"""A ``Task`` bundles a model factory, a per-example loss, metrics and data.

Tasks are looked up by the name used in config files (``task = "mnist_2nn"``). Users add their
own with ``@register_task("name")`` on a function returning a :class:`Task`, or through the
``fedge.tasks`` entry-point group of their package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedge.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import torch
    from numpy.typing import NDArray
    from torch import nn

    from fedge.data.datasets import ArrayDataset

__all__ = ["TASKS", "Task", "cross_entropy", "get_task", "register_task", "top1_correct"]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy (no reduction), so batches can be masked."""
    import torch.nn.functional as F

    return F.cross_entropy(logits, labels, reduction="none")


def top1_correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example 1.0 when the arg-max class is the label, else 0.0."""
    return (logits.argmax(dim=-1) == labels).to(logits.dtype)


@dataclass(frozen=True)
class Task:
    """Everything needed to train and evaluate one model on one data set.

    ``build_model`` returns a fresh ``nn.Module`` taking float32 rows of ``num_features``
    values (models reshape inside, e.g. the CNN). ``load_data`` returns (train, test) sets;
    the train set is what partitioners split over devices, the test set is held out for
    centralised evaluation. ``loss`` and ``correct`` work per example.

    ``class_recall`` (optional) maps the logits and labels of a whole evaluation set to the recall
    of every class (NaN for a class absent from the labels); tasks whose classes are imbalanced
    set it, and the simulator then reports balanced accuracy and per-class recall, which accuracy
    alone hides. ``class_names`` name the classes in label order (empty: unnamed).
    """

    name: str
    description: str
    build_model: Callable[[], nn.Module]
    load_data: Callable[[], tuple[ArrayDataset, ArrayDataset]]
    num_features: int
    num_classes: int
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy
    correct: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = top1_correct
    class_recall: Callable[[torch.Tensor, torch.Tensor], NDArray[np.float64]] | None = None
    class_names: tuple[str, ...] = ()


TaskFactory = Callable[[], Task]
TASKS: Registry[TaskFactory] = Registry("task", entry_point_group="fedge.tasks")


def register_task(name: str) -> Callable[[TaskFactory], TaskFactory]:
    """Decorator registering a function that returns a :class:`Task` under ``name``."""
    return TASKS.register(name)


def _register_builtin_tasks() -> None:
    import fedge.tasks.builtin  # registers the built-in tasks
    import fedge.tasks.usecases  # noqa: F401  (registers the edge use-case tasks)


def get_task(name: str) -> Task:
    """Build the task registered as ``name`` (built-in tasks are registered on import)."""
    _register_builtin_tasks()
    return TASKS.get(name)()


def task_names() -> list[str]:
    """Every registered task's name, the built-in ones included, sorted."""
    _register_builtin_tasks()
    return TASKS.names()
