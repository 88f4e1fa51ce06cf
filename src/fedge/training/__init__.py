"""Local (client-side) training: the plan, the batch schedule and the reference trainer."""

from fedge.training.local import LocalResult, train_local
from fedge.training.plan import (
    LocalTrainingConfig,
    batch_schedule,
    device_rng,
    example_weights,
)

__all__ = [
    "LocalResult",
    "LocalTrainingConfig",
    "batch_schedule",
    "device_rng",
    "example_weights",
    "train_local",
]
