"""The local store (retention, durability) and the eligibility policy on a fake sysfs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedge.device.eligibility import AlwaysEligible, ConditionsPolicy, read_charging, read_idle
from fedge.device.store import LocalStore
from fedge.errors import DataError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_store_appends_reads_and_forgets_after_retention(tmp_path: Path) -> None:
    clock = Clock()
    store = LocalStore(tmp_path / "data.sqlite", retention_s=60, clock=clock)
    rng = np.random.default_rng(0)
    x1, y1 = rng.random((5, 4), dtype=np.float32), np.arange(5)
    store.append(x1, y1)
    clock.now += 30
    x2, y2 = rng.random((3, 4), dtype=np.float32), np.arange(3)
    store.append(x2, y2)
    x, y = store.examples()
    np.testing.assert_array_equal(x, np.concatenate([x1, x2]))
    np.testing.assert_array_equal(y, np.concatenate([y1, y2]))
    clock.now += 31  # the first batch is now older than 60 s
    assert store.count() == 3
    x, y = store.examples()
    np.testing.assert_array_equal(x, x2)
    store.close()
    reopened = LocalStore(tmp_path / "data.sqlite", retention_s=60, clock=clock)
    assert reopened.count() == 3 and reopened.width == 4
    with pytest.raises(DataError, match="features"):
        reopened.append(np.zeros((1, 5), dtype=np.float32), np.zeros(1))
    with pytest.raises(DataError, match="finite"):
        reopened.append(np.full((1, 4), np.nan, dtype=np.float32), np.zeros(1))


def _supply(root: Path, name: str, **files: str) -> None:
    d = root / name
    d.mkdir(parents=True)
    for k, v in files.items():
        (d / k).write_text(v + "\n")


@pytest.mark.parametrize(
    ("supplies", "charging"),
    [
        ({}, True),  # no power-supply entries: mains-powered
        ({"AC": {"type": "Mains", "online": "0"}}, True),  # a supply but no battery
        ({"BAT0": {"type": "Battery", "status": "Discharging"}}, False),
        ({"BAT0": {"type": "Battery", "status": "Charging"}}, True),
        ({"BAT0": {"type": "Battery", "status": "Full"}}, True),
        (
            {
                "BAT0": {"type": "Battery", "status": "Discharging"},
                "AC": {"type": "Mains", "online": "1"},
            },
            True,
        ),
        (
            {
                "BAT0": {"type": "Battery", "status": "Not charging"},
                "usb": {"type": "USB", "online": "0"},
            },
            False,
        ),
    ],
)
def test_charging_from_fake_sysfs(
    tmp_path: Path, supplies: dict[str, dict[str, str]], charging: bool
) -> None:
    root = tmp_path / "power_supply"
    root.mkdir()
    for name, files in supplies.items():
        _supply(root, name, **files)
    assert read_charging(root) is charging


def test_missing_sysfs_means_mains(tmp_path: Path) -> None:
    assert read_charging(tmp_path / "absent") is True


def test_idle_from_loadavg(tmp_path: Path) -> None:
    path = tmp_path / "loadavg"
    path.write_text("0.00 0.01 0.05 1/100 42\n")
    assert read_idle(path, 0.8)
    path.write_text("500.0 400.0 300.0 9/100 42\n")
    assert not read_idle(path, 0.8)


def test_policy_reasons(tmp_path: Path) -> None:
    root = tmp_path / "ps"
    _supply(root, "BAT0", type="Battery", status="Discharging")
    load = tmp_path / "loadavg"
    load.write_text("500.0 1 1 1/1 1\n")
    policy = ConditionsPolicy(
        min_examples=10,
        require_idle=True,
        unmetered=False,
        power_supply_dir=str(root),
        loadavg_path=str(load),
    )
    decision = policy.evaluate(3)
    assert not decision.eligible
    assert len(decision.reasons) == 4  # battery, busy, metered, too few examples
    assert decision.report.charging is False and decision.report.num_examples == 3
    relaxed = ConditionsPolicy(
        min_examples=1,
        require_charging=False,
        unmetered=True,
        power_supply_dir=str(root),
        loadavg_path=str(load),
    )
    assert relaxed.evaluate(3).eligible
    assert not AlwaysEligible(min_examples=5).evaluate(4).eligible
