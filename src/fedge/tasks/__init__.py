"""Tasks: model + data + loss + metrics bundles, looked up by config name."""

from fedge.tasks.base import (
    TASKS,
    Task,
    cross_entropy,
    get_task,
    register_task,
    task_names,
    top1_correct,
)

__all__ = [
    "TASKS",
    "Task",
    "cross_entropy",
    "get_task",
    "register_task",
    "task_names",
    "top1_correct",
]
