"""A demo collector: streams this device's share of a task's training data into its local store.

Real devices append what their sensors observe; for the demo and tests a device plays back its
slice of a partitioned benchmark data set (:func:`device_share`), ``rows_per_tick`` rows every
``interval_s``, starting over when the slice is exhausted (the store's retention window keeps the
total bounded). The rows go only into the local store.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.data import make_partition
from fedge.device.store import LocalStore
from fedge.errors import DataError
from fedge.tasks import get_task

__all__ = ["DemoCollector", "device_share"]


def device_share(
    task_name: str,
    num_devices: int,
    index: int,
    *,
    partitioner: str = "iid",
    seed: int = 0,
    options: dict[str, float] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Device ``index``'s slice of the task's training set split over ``num_devices``.

    With ``partitioner="natural"`` the slices are the task's own devices (machines, patients,
    cars): one each when ``num_devices`` equals their number, else several dealt round-robin.
    """
    if not 0 <= index < num_devices:
        raise DataError(f"device index {index} is outside 0..{num_devices - 1}")
    train, _ = get_task(task_name).load_data()
    extra: dict[str, Any] = dict(options or {})
    if partitioner == "natural":
        # one key per machine / patient / car; with fewer devices than keys the keys are dealt
        # round-robin, so device i plays back the data of keys i, i + N, i + 2N, … in turn
        if train.keys is None:
            raise DataError(f"task {task_name!r} has no device keys; use another partitioner")
        part = make_partition(
            "natural", train.y, None, rng=np.random.default_rng(seed), keys=train.keys
        )
        if num_devices > part.num_devices:
            raise DataError(
                f"{num_devices} devices but task {task_name!r} has data of only "
                f"{part.num_devices} (machines / patients / cars); start at most that many"
            )
        rows = np.concatenate([part[k] for k in range(index, part.num_devices, num_devices)])
    else:
        part = make_partition(
            partitioner, train.y, num_devices, rng=np.random.default_rng(seed), **extra
        )
        rows = part[index]
    return np.ascontiguousarray(train.x[rows], dtype=np.float32), train.y[rows].astype(np.int64)


@dataclass
class DemoCollector:
    """Appends ``rows_per_tick`` rows of (x, y) to ``store`` per :meth:`tick`.

    Each row is played back once (as a sensor would record it); with ``cycle`` the slice is
    replayed forever, and the store's retention window bounds how much is kept.
    """

    store: LocalStore
    x: NDArray[np.float32]
    y: NDArray[np.int64]
    rows_per_tick: int = 10
    interval_s: float = 1.0
    position: int = 0
    cycle: bool = False

    def __post_init__(self) -> None:
        if len(self.y) == 0 or len(self.x) != len(self.y):
            raise DataError("the collector needs a non-empty slice with as many labels as rows")
        if self.rows_per_tick < 1:
            raise DataError(f"rows_per_tick must be >= 1, got {self.rows_per_tick}")

    @property
    def exhausted(self) -> bool:
        """True once every row was appended (never when cycling)."""
        return not self.cycle and self.position >= len(self.y)

    def tick(self) -> int:
        """Append the next rows; returns how many."""
        n = len(self.y)
        if self.cycle:
            idx = (self.position + np.arange(min(self.rows_per_tick, n))) % n
            self.position = int((self.position + len(idx)) % n)
        else:
            idx = np.arange(self.position, min(self.position + self.rows_per_tick, n))
            self.position += len(idx)
            if len(idx) == 0:
                return 0
        return self.store.append(self.x[idx], self.y[idx])

    def run(self, stop: threading.Event) -> None:
        """Tick every ``interval_s`` until ``stop`` is set."""
        while not stop.is_set() and not self.exhausted:
            self.tick()
            stop.wait(self.interval_s)
