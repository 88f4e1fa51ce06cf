"""Public-data loaders, each on a small fixture written here in the published format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedge.errors import DataError
from fedge.usecases.cmapss import load_cmapss
from fedge.usecases.cwru import cwru_windows, read_cwru_mat
from fedge.usecases.telemetry import (
    WindowSpec,
    read_telemetry_csv,
    telemetry_windows,
    write_telemetry_csv,
)
from fedge.usecases.traffic import TrafficConfig, simulate_traffic
from fedge.usecases.uci_har import load_uci_har, load_uci_har_inertial
from fedge.usecases.vibration import BEARINGS, vibration_window


def _write_uci_har(root: Path, split: str, rows: int, rng: np.random.Generator) -> None:
    d = root / split
    (d / "Inertial Signals").mkdir(parents=True)
    np.savetxt(d / f"X_{split}.txt", rng.uniform(-1, 1, (rows, 561)), fmt="%.7e")
    np.savetxt(d / f"y_{split}.txt", rng.integers(1, 7, rows), fmt="%d")
    np.savetxt(d / f"subject_{split}.txt", rng.integers(1, 4, rows), fmt="%d")
    for kind in ("body_acc", "body_gyro", "total_acc"):
        for axis in "xyz":
            values = rng.normal(
                1.0 if (kind, axis) == ("total_acc", "x") else 0.0, 0.1, (rows, 128)
            )
            np.savetxt(d / "Inertial Signals" / f"{kind}_{axis}_{split}.txt", values, fmt="%.7e")


def test_uci_har(tmp_path: Path) -> None:
    root = tmp_path / "UCI HAR Dataset"
    _write_uci_har(root, "train", 12, np.random.default_rng(0))
    data = load_uci_har(root, "train")
    assert data.x.shape == (12, 561) and data.x.dtype == np.float32
    assert data.y.min() >= 0 and data.y.max() <= 5
    assert data.keys is not None and set(data.keys) <= {1, 2, 3}
    inertial = load_uci_har_inertial(root, "train")
    assert inertial.x.shape[0] == 12 and np.isfinite(inertial.x).all()
    np.testing.assert_array_equal(inertial.y, data.y)
    with pytest.raises(DataError, match="not found"):
        load_uci_har(root, "test")


def test_cwru_mat(tmp_path: Path) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    signals = {}
    for number, fault in ((97, "healthy"), (130, "outer")):
        drive = vibration_window(
            rng, fs=12_000.0, samples=12_000, shaft_hz=1797 / 60, load=0.5, bearing=BEARINGS[0],
            resonance_hz=3_500.0, damping=0.05, residual_imbalance=0.1, base_2x=0.05,
            vane_order=6, noise=0.05, gain=1.0, fault=fault, severity=1.0,
        )  # fmt: skip
        path = tmp_path / f"{number}.mat"
        savemat(
            path,
            {
                f"X{number:03d}_DE_time": drive[:, None],
                f"X{number:03d}_FE_time": 0.5 * drive[:, None],
                f"X{number:03d}RPM": np.array([[1797.0]]),
            },
        )
        signals[path] = 0 if fault == "healthy" else 3
    de, fe, rpm = read_cwru_mat(tmp_path / "130.mat")
    assert len(de) == 12_000 and fe is not None and rpm == 1797.0
    data = cwru_windows(signals, samples=4096)
    assert data.x.shape == (4, 57) and list(data.y) == [0, 0, 3, 3]
    kurtosis = data.x[:, 51]  # log_kurtosis: the outer-race file's impulses raise it
    assert kurtosis[2:].min() > kurtosis[:2].max()
    savemat(tmp_path / "bad.mat", {"other": np.zeros(3)})
    with pytest.raises(DataError, match="DE_time"):
        read_cwru_mat(tmp_path / "bad.mat")


def test_cwru_file_with_two_recordings_reads_its_own(tmp_path: Path) -> None:
    """Real CWRU files can hold two recordings' keys (e.g. X098_* and X099_* in one file)."""
    from scipy.io import savemat

    rng = np.random.default_rng(1)
    first, second = rng.normal(0, 1, 9_000), rng.normal(0, 2, 9_000)
    content = {
        "X098_DE_time": first[:, None],
        "X098_FE_time": 0.5 * first[:, None],
        "X099_DE_time": second[:, None],
        "X099_FE_time": 0.5 * second[:, None],
        "X099RPM": np.array([[1772.0]]),
    }
    savemat(tmp_path / "99.mat", content)
    drive, fan, rpm = read_cwru_mat(tmp_path / "99.mat")  # the file number picks X099
    np.testing.assert_array_equal(drive, second)
    assert fan is not None and np.allclose(fan, 0.5 * second) and rpm == 1772.0
    # the other recording, by number: its RPM entry is missing, so the speed must be given
    with pytest.raises(
        DataError,
        match=r"no 'X<number>RPM' entry for recording 98 \(only X099RPM\); pass the motor speed, e\.g\. rpm=",
    ):
        read_cwru_mat(tmp_path / "99.mat", number=98)
    drive, fan, rpm = read_cwru_mat(tmp_path / "99.mat", number=98, rpm=1797.0)
    np.testing.assert_array_equal(drive, first)
    assert fan is not None and np.allclose(fan, 0.5 * first) and rpm == 1797.0
    # a renamed file cannot tell its recordings apart: refused, naming the choices
    savemat(tmp_path / "pair.mat", content)
    with pytest.raises(DataError, match=r"2 '\*_DE_time' signals .*number= \(one of 98, 99\)"):
        read_cwru_mat(tmp_path / "pair.mat")
    with pytest.raises(DataError, match="none is the one of file number 97"):
        read_cwru_mat(tmp_path / "99.mat", number=97)
    with pytest.raises(DataError, match="positive motor speed"):
        read_cwru_mat(tmp_path / "99.mat", rpm=-5.0)
    # rpm= overrides the file's entry, and cwru_windows passes it per path
    assert read_cwru_mat(tmp_path / "99.mat", rpm=1730.0)[2] == 1730.0
    data = cwru_windows({tmp_path / "99.mat": 0}, samples=4_096, rpm={tmp_path / "99.mat": 1750.0})
    shaft = data.x[:, -2]
    np.testing.assert_allclose(shaft, 1750.0 / 60.0, rtol=1e-6)


def test_cmapss(tmp_path: Path) -> None:
    rows = []
    for unit, life in ((1, 50), (2, 40)):
        for cycle in range(1, life + 1):
            rows.append([unit, cycle, 0.0, 0.0, 100.0, *np.linspace(1, 2, 21)])
    path = tmp_path / "train_FD001.txt"
    np.savetxt(path, np.array(rows), fmt="%.4f")
    data = load_cmapss(path, horizon=10)
    assert data.x.shape == (90, 24)
    assert data.y.sum() == 22  # RUL 0..10 for each unit
    assert data.keys is not None and set(data.keys) == {1, 2}
    np.savetxt(tmp_path / "short.txt", np.zeros((2, 5)))
    with pytest.raises(DataError, match="columns"):
        load_cmapss(tmp_path / "short.txt")


def test_telemetry_csv_round_trip(tmp_path: Path) -> None:
    logs = simulate_traffic(
        TrafficConfig(regions=1, cars_per_region=2, trip_s=30.0), np.random.default_rng(0)
    )
    path = tmp_path / "telemetry.csv"
    write_telemetry_csv(logs, path)
    assert path.read_text().splitlines()[0].startswith("vehicle_id,timestamp_s,speed_mps")
    back = read_telemetry_csv(path)
    assert len(back) == 2 and back[0].dt == pytest.approx(0.1)
    x0, y0 = telemetry_windows(logs[0], WindowSpec())
    x1, y1 = telemetry_windows(back[0], WindowSpec())
    np.testing.assert_array_equal(y0, y1)
    np.testing.assert_allclose(x0, x1, atol=1e-2)
    (tmp_path / "bad.csv").write_text("vehicle_id,timestamp_s\n1,0.0\n")
    with pytest.raises(DataError, match="missing column"):
        read_telemetry_csv(tmp_path / "bad.csv")
