"""Public-data loaders, each on a small fixture written here in the published format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedge.errors import DataError
from fedge.usecases.cmapss import load_cmapss
from fedge.usecases.cwru import cwru_windows, read_cwru_mat
from fedge.usecases.maintenance import MAINTENANCE_FEATURES
from fedge.usecases.telemetry import (
    WindowSpec,
    read_telemetry_csv,
    telemetry_fleet,
    telemetry_windows,
    write_telemetry_csv,
)
from fedge.usecases.traffic import RADAR_RANGE_M, Telemetry, TrafficConfig, simulate_traffic
from fedge.usecases.uci_har import load_uci_har, load_uci_har_inertial

from .local_data import TELEMETRY_COLUMNS, telemetry_rows, write_csv, write_cwru, write_uci_har


def test_uci_har(tmp_path: Path) -> None:
    root = tmp_path / "UCI HAR Dataset"
    write_uci_har(root, "train", 12, np.random.default_rng(0))
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

    signals = write_cwru(tmp_path, {97: "healthy", 130: "outer"}, np.random.default_rng(0))
    de, fe, rpm = read_cwru_mat(tmp_path / "130.mat")
    assert len(de) == 12_000 and fe is not None and rpm == 1797.0
    data = cwru_windows(signals, samples=4096)
    assert data.x.shape == (4, len(MAINTENANCE_FEATURES)) and list(data.y) == [0, 0, 3, 3]
    # the rows carry the generated fleet's columns, so a column is found by its name
    kurtosis = data.x[:, MAINTENANCE_FEATURES.index("log_kurtosis")]
    assert kurtosis[2:].min() > kurtosis[:2].max()  # the outer-race file's impulses raise it
    shaft = data.x[:, MAINTENANCE_FEATURES.index("shaft_hz")]
    np.testing.assert_allclose(shaft, 1797.0 / 60.0, rtol=1e-6)
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
    shaft = data.x[:, MAINTENANCE_FEATURES.index("shaft_hz")]
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


def test_telemetry_csv_as_a_user_exports_it(tmp_path: Path) -> None:
    """A hand-written export: two cars interleaved, one car's rows shuffled, epoch timestamps,
    empty headway fields, road and weather names: read back sample by sample, in time order."""
    n = 120  # 12 s: windows end at samples 50 and 70 (5 s of history, 3 s horizon, 2 s stride)
    car_a = telemetry_rows("12", n, brake_at=90)  # a harsh stop 9 s in: the second window sees it
    car_b = telemetry_rows("7", n, brake_at=None)
    shuffled = [car_b[i] for i in np.random.default_rng(0).permutation(n)]
    rows = [r for pair in zip(car_a, shuffled, strict=True) for r in pair]
    path = tmp_path / "fleet_export.csv"
    write_csv(path, TELEMETRY_COLUMNS, rows)
    logs = read_telemetry_csv(path, region=3)
    assert [t.car for t in logs] == [0, 1] and {t.region for t in logs} == {3}
    seven, twelve = logs  # vehicle ids in numeric order: 7 before 12
    for t in logs:
        assert t.dt == pytest.approx(0.1)
        np.testing.assert_allclose(t.speed, 15.0 + 0.05 * np.arange(n), atol=1e-9)  # sorted
        np.testing.assert_allclose(t.steering, 2.0 * (-1.0) ** np.arange(n))
        expected_headway = np.where(np.arange(n) % 10 == 0, RADAR_RANGE_M, 40.0 - 0.1 * np.arange(n))  # fmt: skip
        np.testing.assert_allclose(t.headway, expected_headway, atol=1e-9)
        assert (t.road == 2).all() and (t.weather == 1).all()  # highway, rain
    assert twelve.accel[90] == pytest.approx(-5.2) and twelve.brake[90] == pytest.approx(0.66)
    assert (seven.accel == 0.5).all()
    x, y = telemetry_windows(twelve)
    assert list(y) == [0, 1]  # the stop at 9.0 s is within 3 s of the window ending at 7.0 s
    assert list(telemetry_windows(seven)[1]) == [0, 0]
    names = telemetry_fleet([twelve]).feature_names
    assert x[0, names.index("speed_last")] == pytest.approx(15.0 + 0.05 * 49)
    assert x[0, names.index("road_highway")] == 1.0 and x[0, names.index("weather_rain")] == 1.0


def test_telemetry_csv_without_the_optional_columns(tmp_path: Path) -> None:
    """No headway, road or weather columns: nobody ahead, urban, dry (documented defaults)."""
    columns = [c for c in TELEMETRY_COLUMNS if c not in ("headway_m", "road_type", "weather")]
    path = tmp_path / "minimal.csv"
    write_csv(path, columns, telemetry_rows("car-a", 100, brake_at=None))
    (log,) = read_telemetry_csv(path)
    assert (log.headway == RADAR_RANGE_M).all()
    assert (log.road == 0).all() and (log.weather == 0).all()
    x, y = telemetry_windows(log)
    assert len(y) == 1 and np.isfinite(x).all()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: rows.__setitem__(5, {**rows[5], "timestamp_s": rows[4]["timestamp_s"]}),
         r"vehicle 1: timestamp_s 1700000000\.4 appears more than once \(again on line 7\)"),
        (lambda rows: rows.__setitem__(3, {**rows[3], "speed_mps": "fast"}),
         r"line 5: speed_mps='fast' is not a number"),
        (lambda rows: rows.__setitem__(3, {**rows[3], "speed_mps": "nan"}),
         r"line 5: speed_mps='nan' is not a finite number"),
        (lambda rows: rows.__setitem__(3, {**rows[3], "accel_mps2": ""}),
         r"line 5: column 'accel_mps2' is empty; it is required"),
        (lambda rows: rows.__setitem__(3, {**rows[3], "road_type": "motorway"}),
         r"vehicle 1: road_type 'motorway' is not one of \('urban', 'rural', 'highway'\)"),
        (lambda rows: rows.__delitem__(slice(1, None)), r"vehicle 1: needs at least two samples"),
    ],
)  # fmt: skip
def test_telemetry_csv_refusals(tmp_path: Path, edit: object, message: str) -> None:
    rows = telemetry_rows("1", 60, brake_at=None)
    edit(rows)  # type: ignore[operator]
    path = tmp_path / "bad.csv"
    write_csv(path, TELEMETRY_COLUMNS, rows)
    with pytest.raises(DataError, match=message):
        read_telemetry_csv(path)
    (tmp_path / "no_columns.csv").write_text("vehicle_id,timestamp_s\n1,0.0\n")
    with pytest.raises(DataError, match="missing column"):
        read_telemetry_csv(tmp_path / "no_columns.csv")


def test_write_telemetry_csv_round_trip(tmp_path: Path) -> None:
    """What write_telemetry_csv writes (e.g. a simulated fleet) reads back into the same windows."""
    logs = simulate_traffic(
        TrafficConfig(regions=1, cars_per_region=2, trip_s=30.0), np.random.default_rng(0)
    )
    path = tmp_path / "telemetry.csv"
    write_telemetry_csv(logs, path)
    assert path.read_text().splitlines()[0] == ",".join(TELEMETRY_COLUMNS)
    back = read_telemetry_csv(path)
    assert len(back) == 2 and back[0].dt == pytest.approx(0.1)
    x0, y0 = telemetry_windows(logs[0], WindowSpec())
    x1, y1 = telemetry_windows(back[0], WindowSpec())
    np.testing.assert_array_equal(y0, y1)
    np.testing.assert_allclose(x0, x1, atol=1e-2)
    assert isinstance(back[0], Telemetry)
