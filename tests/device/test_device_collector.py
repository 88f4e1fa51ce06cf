"""The demo collector streams a slice into the local store: in order, replayed with ``cycle``,
and continued (not repeated) by a restarted device."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from fedge.device.collector import DemoCollector, rows_appended
from fedge.device.store import LocalStore
from fedge.errors import DataError


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _slice(n: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Row i is [i, -i] with label i % 3: every row is recognisable in the store."""
    i = np.arange(n, dtype=np.float32)
    return np.column_stack([i, -i]), (np.arange(n) % 3).astype(np.int64)


def _ids(store: LocalStore) -> list[int]:
    x, _ = store.examples()
    return [int(v) for v in x[:, 0]]


def test_ticks_append_the_slice_in_order_once(tmp_path: Path) -> None:
    x, y = _slice(25)
    with LocalStore(tmp_path / "data.sqlite", 3600) as store:
        c = DemoCollector(store, x, y, rows_per_tick=10)
        assert [c.tick(), c.tick()] == [10, 10]
        assert _ids(store) == list(range(20)) and c.position == 20 and not c.exhausted
        assert c.tick() == 5  # the last, shorter tick
        assert c.exhausted and c.tick() == 0 and c.tick() == 0  # nothing is played twice
        got_x, got_y = store.examples()
        np.testing.assert_array_equal(got_x, x)
        np.testing.assert_array_equal(got_y, y)
        assert rows_appended(store) == 25


def test_cycle_replays_the_slice(tmp_path: Path) -> None:
    x, y = _slice(7)
    with LocalStore(tmp_path / "data.sqlite", 3600) as store:
        c = DemoCollector(store, x, y, rows_per_tick=3, cycle=True)
        for _ in range(5):
            assert c.tick() == 3
        assert not c.exhausted
        assert _ids(store) == [k % 7 for k in range(15)]  # 0..6, 0..6, 0 — in order, wrapping
        assert c.position == 15 % 7
        small = DemoCollector(store, x[:2], y[:2], rows_per_tick=5, cycle=True)
        assert small.tick() == 2  # a tick never plays one row twice


def test_a_restarted_device_continues_and_appends_no_row_twice(tmp_path: Path) -> None:
    x, y = _slice(25)
    path = tmp_path / "data.sqlite"
    with LocalStore(path, 3600) as store:
        first = DemoCollector.resuming(store, x, y, rows_per_tick=10)
        assert first.position == 0
        first.tick()
        first.tick()  # 20 rows in, then the device stops
    with LocalStore(path, 3600) as store:
        again = DemoCollector.resuming(store, x, y, rows_per_tick=10)
        assert again.position == 20
        while not again.exhausted:
            again.tick()
        assert _ids(store) == list(range(25))  # each row exactly once
    with LocalStore(path, 3600) as store:  # restarted once more: the slice is all in
        done = DemoCollector.resuming(store, x, y, rows_per_tick=10)
        assert done.exhausted and done.tick() == 0
        assert store.count() == 25


def test_rows_the_retention_window_dropped_are_not_played_again(tmp_path: Path) -> None:
    """The store forgot the old rows, the count of what it received stays: resuming from the
    rows the store holds now would replay the dropped ones as new observations."""
    x, y = _slice(25)
    clock = Clock()
    path = tmp_path / "data.sqlite"
    with LocalStore(path, 60, clock=clock) as store:
        c = DemoCollector(store, x, y, rows_per_tick=10)
        c.tick()
        clock.now += 30
        c.tick()
        clock.now += 45  # the first ten rows are past the 60 s window
        assert store.prune() == 10 and store.count() == 10
        assert rows_appended(store) == 20
    with LocalStore(path, 60, clock=clock) as store:
        again = DemoCollector.resuming(store, x, y, rows_per_tick=10)
        assert again.position == 20
        again.tick()
        assert _ids(store) == list(range(10, 25))


def test_a_cycling_device_continues_its_replay(tmp_path: Path) -> None:
    x, y = _slice(7)
    path = tmp_path / "data.sqlite"
    with LocalStore(path, 3600) as store:
        c = DemoCollector.resuming(store, x, y, rows_per_tick=4, cycle=True)
        c.tick()
        c.tick()  # 8 rows: 0..6, 0
    with LocalStore(path, 3600) as store:
        again = DemoCollector.resuming(store, x, y, rows_per_tick=4, cycle=True)
        assert again.position == 1
        again.tick()
        assert _ids(store) == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4]


def test_a_failed_append_is_tried_again(tmp_path: Path) -> None:
    x, y = _slice(5)
    with LocalStore(tmp_path / "data.sqlite", 3600) as store:
        store.append(np.zeros((1, 3), np.float32), np.zeros(1, np.int64))  # width 3 now
        c = DemoCollector(store, x, y, rows_per_tick=2)
        with pytest.raises(DataError, match="features"):
            c.tick()
        assert c.position == 0  # not skipped: the rows were never stored


def test_run_ticks_until_exhausted_or_stopped(tmp_path: Path) -> None:
    x, y = _slice(25)
    with LocalStore(tmp_path / "data.sqlite", 3600) as store:
        c = DemoCollector(store, x, y, rows_per_tick=10, interval_s=0.001)
        c.run(threading.Event())  # returns once the slice is in
        assert store.count() == 25
        stop = threading.Event()
        stop.set()
        cycling = DemoCollector(store, x, y, rows_per_tick=10, interval_s=0.001, cycle=True)
        cycling.run(stop)  # stopped: not a single tick
        assert store.count() == 25


def test_the_slice_is_checked() -> None:
    x, y = _slice(3)
    with LocalStore(":memory:", 3600) as store:
        with pytest.raises(DataError, match="non-empty"):
            DemoCollector(store, x[:0], y[:0])
        with pytest.raises(DataError, match="as many labels"):
            DemoCollector(store, x, y[:2])
        with pytest.raises(DataError, match="rows_per_tick"):
            DemoCollector(store, x, y, rows_per_tick=0)
        c = DemoCollector.resuming(store, x, y)  # a store in memory: resumes from what it holds
        assert c.position == 0
