"""The device's local holdout: a deterministic share of the rows, never trained on, read by the
serving health check at each check; a floor with too small a holdout is skipped out loud."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import httpx
import numpy as np
import pytest

from fedge.device.config import ServingConfig
from fedge.device.predictor import HealthCheck, Predictor
from fedge.device.serving import start_endpoint
from fedge.device.store import LocalStore, is_holdout
from fedge.errors import DataError, HealthCheckError

from .test_predictor import TASK, biased_params


def _rows(n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows whose first feature is their overall number, labelled 3."""
    x = np.zeros((n, 64), np.float32)
    x[:, 0] = np.arange(start, start + n)
    return x, np.full(n, 3)


def test_a_deterministic_share_is_held_out_of_training(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data.sqlite", 3600, holdout_fraction=0.25)
    for start in range(0, 100, 7):  # appended in uneven batches: the same rows are held out
        store.append(*_rows(min(7, 100 - start), start))
    hx, hy = store.holdout()
    tx, ty = store.examples()
    assert len(hy) == 25 and len(ty) == 75
    assert store.count() == 100 and store.training_count() == 75
    assert store.count(holdout=True) == 25
    held = set(hx[:, 0].astype(int).tolist())
    assert held == {n for n in range(100) if is_holdout(n, 0.25)} == set(range(3, 100, 4))
    assert held.isdisjoint(tx[:, 0].astype(int).tolist())  # never trained on
    newest, _ = store.holdout(limit=5)
    assert newest[:, 0].astype(int).tolist() == [83, 87, 91, 95, 99]
    store.close()

    reopened = LocalStore(tmp_path / "data.sqlite", 3600, holdout_fraction=0.25)
    reopened.append(*_rows(4, 100))  # the count goes on across restarts: row 103 is held out
    assert reopened.holdout()[0][-1, 0] == 103 and reopened.count(holdout=True) == 26
    with pytest.raises(DataError, match="holdout_fraction"):
        LocalStore(tmp_path / "other.sqlite", 3600, holdout_fraction=1.0)


def test_without_a_fraction_nothing_is_held_out(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data.sqlite", 3600)
    store.append(*_rows(10))
    assert len(store.examples()[1]) == 10 and len(store.holdout()[1]) == 0


def test_a_store_made_before_the_holdout_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE examples (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,
                               x BLOB NOT NULL, y INTEGER NOT NULL);
        CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO store_meta VALUES ('width', '2');
        """
    )
    row = np.zeros(2, "<f4").tobytes()
    db.executemany("INSERT INTO examples (at, x, y) VALUES (?, ?, 0)", [(1e12, row)] * 4)
    db.commit()
    db.close()
    store = LocalStore(path, 3600, holdout_fraction=0.5, clock=lambda: 1e12)
    assert len(store.examples()[1]) == 4  # the old rows were all training rows
    store.append(np.ones((2, 2), np.float32), np.zeros(2))  # rows 4 and 5: one held out
    assert store.count(holdout=True) == 1 and store.training_count() == 5


def test_the_health_check_reads_the_current_holdout_and_warns_when_it_is_too_small(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LocalStore(tmp_path / "data.sqlite", 3600, holdout_fraction=0.5)
    health = HealthCheck(holdout=lambda: store.holdout(200), min_accuracy=0.9, min_holdout_rows=10)
    predictor = Predictor(TASK, health)
    with caplog.at_level(logging.WARNING, logger="fedge.device.predictor"):
        fresh = predictor.load("v1", biased_params(4))  # a fresh device: no holdout yet
    assert fresh.holdout_accuracy is None
    assert "accuracy check skipped" in fresh.skipped and "0 row(s)" in fresh.skipped
    assert any("accuracy check skipped" in r.getMessage() for r in caplog.records)

    store.append(*_rows(12))  # 6 held out: still too few
    assert "6 row(s), fewer than the 10" in predictor.load("v2", biased_params(4)).skipped
    store.append(*_rows(12, 12))  # 12 held out: the floor is checked now
    with pytest.raises(HealthCheckError, match="below the floor"):
        predictor.load("v3", biased_params(4))  # predicts 4, the holdout says 3
    good = predictor.load("v4", biased_params(3))
    assert good.holdout_accuracy == 1.0 and good.skipped == ""
    assert predictor.version == "v4"


def test_the_endpoint_says_which_check_was_skipped() -> None:
    health = HealthCheck(holdout=lambda: _rows(2), min_accuracy=0.5, min_holdout_rows=5)
    predictor = Predictor(TASK, health)
    predictor.load("v1", biased_params(3))
    with start_endpoint(predictor) as endpoint:
        model = httpx.get(f"{endpoint.url}/model").json()
    assert model["version"] == "v1" and model["holdout_accuracy"] is None
    assert (
        "accuracy check skipped" in model["skipped_check"] and "2 row(s)" in model["skipped_check"]
    )


def test_no_floor_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fedge.device.predictor"):
        served = Predictor(TASK, HealthCheck(holdout=lambda: _rows(0))).load("v", biased_params(3))
    assert served.skipped == "" and not caplog.records


def test_serving_config_takes_the_holdout_settings() -> None:
    cfg = ServingConfig.model_validate(
        {"job": "demo", "min_accuracy": 0.5, "holdout_fraction": 0.2, "min_holdout_rows": 30}
    )
    assert (cfg.holdout_fraction, cfg.min_holdout_rows, cfg.holdout_rows) == (0.2, 30, 200)
    assert ServingConfig(job="demo").holdout_fraction == 0.1
    with pytest.raises(ValueError):
        ServingConfig.model_validate({"job": "demo", "holdout_fraction": 1.0})
