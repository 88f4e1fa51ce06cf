"""A demo collector: streams this device's share of a task's training data into its local store.

Real devices append what their sensors observe; for the demo and tests a device plays back its
slice of a partitioned benchmark data set (:func:`device_share`), ``rows_per_tick`` rows every
``interval_s``: each row once, or with ``cycle`` starting over when the slice is exhausted (the
store's retention window keeps the total bounded). The rows go only into the local store.

A restarted device continues its playback where it stopped (:meth:`DemoCollector.resuming`): the
store remembers how many rows it ever received (:func:`rows_appended`, which counts the rows the
retention window dropped since), so no row is appended twice.
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

__all__ = ["DemoCollector", "device_share", "rows_appended"]


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


def rows_appended(store: LocalStore) -> int:
    """Rows ever appended to ``store``, including those its retention window dropped since."""
    return store.appended


@dataclass
class DemoCollector:
    """Appends ``rows_per_tick`` rows of (x, y) to ``store`` per :meth:`tick`.

    Each row is played back once (as a sensor would record it); with ``cycle`` the slice is
    replayed forever, and the store's retention window bounds how much is kept. ``position`` is
    the next row to play back; :meth:`resuming` sets it from what the store already received.
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

    @classmethod
    def resuming(
        cls,
        store: LocalStore,
        x: NDArray[np.float32],
        y: NDArray[np.int64],
        *,
        rows_per_tick: int = 10,
        interval_s: float = 1.0,
        cycle: bool = False,
    ) -> DemoCollector:
        """A collector that continues this device's playback where its last run stopped.

        The store received :func:`rows_appended` rows of this slice before (an empty store:
        none): playback starts after them, so a restarted device appends no row twice, even
        rows its retention window has dropped since. With ``cycle`` the replay continues at
        the same point of the slice. A store that already holds the whole slice gets nothing
        more (without ``cycle``).
        """
        done = rows_appended(store)
        n = len(y)
        position = (done % n if cycle else min(done, n)) if n else 0
        return cls(
            store,
            x,
            y,
            rows_per_tick=rows_per_tick,
            interval_s=interval_s,
            position=position,
            cycle=cycle,
        )

    @property
    def exhausted(self) -> bool:
        """True once every row was appended (never when cycling)."""
        return not self.cycle and self.position >= len(self.y)

    def tick(self) -> int:
        """Append the next rows; returns how many. The position moves on only once they are in
        the store (an append that fails is tried again at the next tick)."""
        n = len(self.y)
        if self.cycle:
            idx = (self.position + np.arange(min(self.rows_per_tick, n))) % n
        else:
            idx = np.arange(self.position, min(self.position + self.rows_per_tick, n))
            if len(idx) == 0:
                return 0
        added = self.store.append(self.x[idx], self.y[idx])
        self.position = (self.position + len(idx)) % n if self.cycle else self.position + len(idx)
        return added

    def run(self, stop: threading.Event) -> None:
        """Tick every ``interval_s`` until ``stop`` is set."""
        while not stop.is_set() and not self.exhausted:
            self.tick()
            stop.wait(self.interval_s)
