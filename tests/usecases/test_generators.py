"""Generators: deterministic for a seed, physically sensible, devices and labels as promised."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.usecases.fleet import split_fleet
from fedge.usecases.maintenance import FAULTS, MaintenanceConfig, generate_maintenance
from fedge.usecases.telemetry import WindowSpec, telemetry_fleet, telemetry_windows
from fedge.usecases.traffic import TrafficConfig, simulate_traffic
from fedge.usecases.vibration import BEARINGS, vibration_features, vibration_window
from fedge.usecases.wearables import WearablesConfig, generate_wearables

SMALL_MACHINES = MaintenanceConfig(
    sites=2, machines_per_site=4, windows_per_machine=6, samples=2048
)
SMALL_COHORT = WearablesConfig(clinics=2, patients_per_clinic=3, windows=(20, 30))
SMALL_TRAFFIC = TrafficConfig(regions=2, cars_per_region=3, trip_s=60.0)


def test_cwru_bearing_defect_orders() -> None:
    # Published CWRU drive-end (6205) and fan-end (6203) defect frequencies, × shaft speed.
    assert BEARINGS[0].bpfo_order == pytest.approx(3.5848, abs=1e-4)
    assert BEARINGS[0].bpfi_order == pytest.approx(5.4152, abs=1e-4)
    assert BEARINGS[1].bpfo_order == pytest.approx(3.0530, abs=1e-3)


def _window(fault: str, severity: float, seed: int = 0) -> np.ndarray:
    return vibration_window(
        np.random.default_rng(seed), fs=12_000.0, samples=8192, shaft_hz=30.0, load=0.8,
        bearing=BEARINGS[0], resonance_hz=3_500.0, damping=0.05, residual_imbalance=0.1,
        base_2x=0.05, vane_order=6, noise=0.05, gain=1.0, fault=fault, severity=severity,
    )  # fmt: skip


def test_outer_race_fault_peaks_at_bpfo_in_the_envelope_spectrum() -> None:
    shaft = np.array([30.0])
    feats, names = vibration_features(_window("outer", 1.0)[None], 12_000.0, shaft)
    env = feats[0, [i for i, n in enumerate(names) if n.startswith("env_order_")]]
    lower = float(names[3 + int(np.argmax(env))].split("_")[-1])
    assert lower <= BEARINGS[0].bpfo_order < lower + 0.25
    healthy, _ = vibration_features(_window("healthy", 0.0)[None], 12_000.0, shaft)
    assert feats[0, names.index("log_kurtosis")] > healthy[0, names.index("log_kurtosis")]


def test_imbalance_raises_1x_and_misalignment_2x() -> None:
    shaft = np.array([30.0])
    base, names = vibration_features(_window("healthy", 0.0)[None], 12_000.0, shaft)
    imb, _ = vibration_features(_window("imbalance", 1.0)[None], 12_000.0, shaft)
    mis, _ = vibration_features(_window("misalignment", 1.0)[None], 12_000.0, shaft)
    assert imb[0, names.index("amp_1x")] > base[0, names.index("amp_1x")] + 0.5
    assert mis[0, names.index("amp_2x")] > base[0, names.index("amp_2x")] + 0.5


def test_maintenance_is_deterministic_and_keyed_by_machine() -> None:
    a, wa = generate_maintenance(SMALL_MACHINES, np.random.default_rng(3))
    b, wb = generate_maintenance(SMALL_MACHINES, np.random.default_rng(3))
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(wa, wb)
    assert a.num_devices == 8 and len(a.y) == 8 * 6
    assert set(np.unique(a.group)) == {0, 1}
    assert a.x.shape[1] == len(a.feature_names) and np.isfinite(a.x).all()
    assert a.y.max() < len(FAULTS) and set(np.unique(wa)) <= {0, 1}


def test_faults_are_rare_and_one_per_machine() -> None:
    fleet, _ = generate_maintenance(
        MaintenanceConfig(sites=2, machines_per_site=8, windows_per_machine=20, samples=1024),
        np.random.default_rng(0),
    )
    assert (fleet.y == 0).mean() > 0.7
    for d in np.unique(fleet.device):
        assert len(set(np.unique(fleet.y[fleet.device == d])) - {0}) <= 1


def test_wearables_cadence_and_heart_rate() -> None:
    fleet, anomaly = generate_wearables(SMALL_COHORT, np.random.default_rng(1))
    again, _ = generate_wearables(SMALL_COHORT, np.random.default_rng(1))
    np.testing.assert_array_equal(fleet.x, again.x)
    assert fleet.num_devices == 6 and np.isfinite(fleet.x).all()
    names = fleet.feature_names
    dom = fleet.x[:, names.index("dominant_hz")]
    walking, running = dom[fleet.y == 2], dom[fleet.y == 4]
    assert 1.4 < np.median(walking) < 2.2
    if len(running):
        assert 2.3 < np.median(running) < 3.2
    hr = fleet.x[:, names.index("hr_mean")] * 100
    assert np.median(hr[fleet.y == 0]) < np.median(hr[fleet.y >= 2])
    assert set(np.unique(anomaly)) <= {0, 1}


def test_traffic_is_deterministic_for_a_seed() -> None:
    def logs(seed: int) -> list[dict[str, object]]:
        return [vars(t) for t in simulate_traffic(SMALL_TRAFFIC, np.random.default_rng(seed))]

    a, b, other = logs(5), logs(5), logs(6)
    assert len(a) == len(b) == SMALL_TRAFFIC.regions * SMALL_TRAFFIC.cars_per_region
    for first, again in zip(a, b, strict=True):
        assert first.keys() == again.keys()
        for field, value in first.items():
            np.testing.assert_array_equal(value, again[field], err_msg=field)
    # another seed drives differently (speeds, and so the telemetry windows and their labels)
    assert any(not np.array_equal(x["speed"], y["speed"]) for x, y in zip(a, other, strict=True))
    fa = telemetry_fleet(simulate_traffic(SMALL_TRAFFIC, np.random.default_rng(5)))
    fb = telemetry_fleet(simulate_traffic(SMALL_TRAFFIC, np.random.default_rng(5)))
    fo = telemetry_fleet(simulate_traffic(SMALL_TRAFFIC, np.random.default_rng(6)))
    np.testing.assert_array_equal(fa.x, fb.x)
    np.testing.assert_array_equal(fa.y, fb.y)
    assert fa.x.shape != fo.x.shape or not np.array_equal(fa.x, fo.x)


def test_traffic_events_follow_the_definition() -> None:
    logs = simulate_traffic(SMALL_TRAFFIC, np.random.default_rng(2))
    assert len(logs) == 6
    for t in logs:
        assert (t.speed >= 0).all() and (t.headway >= 0).all()
    spec = WindowSpec()
    x, y = telemetry_windows(logs[0], spec)
    assert len(x) == len(y) and np.isfinite(x).all()
    fleet = telemetry_fleet(logs, spec)
    assert fleet.num_devices == 6


def test_harsh_braking_ahead_is_labelled() -> None:
    t = simulate_traffic(SMALL_TRAFFIC, np.random.default_rng(2))[0]
    accel = np.zeros_like(t.accel)
    accel[400] = -6.0  # one harsh stop at t = 40 s
    quiet = type(t)(**{**t.__dict__, "accel": accel, "headway": np.full_like(t.headway, 150.0)})
    spec = WindowSpec()
    _, y = telemetry_windows(quiet, spec)
    ends = np.arange(50, len(accel) - 30, 20)
    expected = ((ends <= 400) & (ends + 30 > 400)).astype(np.int64)
    np.testing.assert_array_equal(y, expected)


def test_split_holds_out_whole_devices() -> None:
    fleet, _ = generate_maintenance(SMALL_MACHINES, np.random.default_rng(0))
    train, test = split_fleet(fleet, 0.25, np.random.default_rng(0))
    assert train.keys is not None and test.keys is not None
    assert not set(train.keys) & set(test.keys)
    assert len(train) + len(test) == len(fleet.y)
    np.testing.assert_allclose(train.x.mean(axis=0), 0.0, atol=1e-4)


def test_abnormal_hr_label_follows_the_deviation_from_the_normal_response() -> None:
    """The same cohort (same draws) labelled at 10 and 20 bpm: a stricter threshold keeps a
    subset; a threshold no response reaches leaves only the irregular rhythms, which the
    within-window HR spread shows."""
    cohort = WearablesConfig(clinics=2, patients_per_clinic=6, condition_probability=1.0)
    fleet, at10 = generate_wearables(cohort, np.random.default_rng(4))
    _, at20 = generate_wearables(
        WearablesConfig(**{**cohort.__dict__, "abnormal_bpm": 20.0}), np.random.default_rng(4)
    )
    _, irregular = generate_wearables(
        WearablesConfig(**{**cohort.__dict__, "abnormal_bpm": 1e9}), np.random.default_rng(4)
    )
    assert at20.sum() > 0 and at10.sum() > at20.sum()
    assert not (at20 & ~at10).any() and not (irregular & ~at20).any()
    spread = fleet.x[:, fleet.feature_names.index("hr_logstd")]
    assert irregular.any() and spread[irregular == 1].min() > np.median(spread[irregular == 0])


def test_wearables_history_features() -> None:
    fleet, _ = generate_wearables(SMALL_COHORT, np.random.default_rng(1))
    names = fleet.feature_names
    exertion = fleet.x[:, names.index("exertion")]
    assert np.median(exertion[fleet.y >= 2]) > np.median(exertion[fleet.y <= 1])
    for name in ("hr_change", "hr_vs_own_response"):
        assert np.isfinite(fleet.x[:, names.index(name)]).all()


def test_leader_braking_is_read_from_the_radar() -> None:
    """Own car steady, the gap closing ever faster: the leader brakes at 6 m/s²."""
    t = simulate_traffic(SMALL_TRAFFIC, np.random.default_rng(2))[0]
    n = len(t.speed)
    steady = type(t)(
        **{
            **t.__dict__,
            "speed": np.full(n, 20.0),
            "accel": np.zeros(n),
            "relative_speed": -6.0 * np.arange(n) * t.dt,
            "headway": np.full(n, 100.0),
        }
    )
    x, _ = telemetry_windows(steady)
    names = telemetry_fleet([steady]).feature_names
    assert x[:, names.index("lead_accel_last")] == pytest.approx(-6.0, abs=1e-3)
    needed = x[:, names.index("brake_needed_last")]
    assert (np.diff(needed) >= 0).all()  # closing faster on the same gap: more braking needed
