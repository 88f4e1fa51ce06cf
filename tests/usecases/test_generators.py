"""Generators: deterministic for a seed, physically sensible, devices and labels as promised."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.usecases import maintenance
from fedge.usecases.fleet import Fleet, split_fleet
from fedge.usecases.maintenance import FAULTS, MaintenanceConfig, generate_maintenance
from fedge.usecases.telemetry import WindowSpec, telemetry_fleet, telemetry_windows
from fedge.usecases.traffic import Telemetry, TrafficConfig, simulate_traffic
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


# -- the fleets the tasks train on: devices differ, labels are as rare as documented ----------


def _task_fleet(name: str) -> Fleet:
    from fedge.tasks.usecases import usecase_fleet

    return usecase_fleet(name)  # generated once per machine, then read from the on-disk cache


def _between_device_ratio(fleet: Fleet, feature: str, rows: np.ndarray | None = None) -> float:
    """Variance of the per-device means of ``feature`` over what split-half noise explains.

    Each device's windows (``rows`` of them only, if given) are split in two interleaved halves;
    half the difference of the halves' means estimates the noise on the device's mean. With no
    between-device variation the ratio is about 1 (an F statistic)."""
    col = fleet.x[:, fleet.feature_names.index(feature)].astype(np.float64)
    means, diffs = [], []
    for d in np.unique(fleet.device):
        own = np.flatnonzero((fleet.device == d) & (True if rows is None else rows))
        if len(own) < 4:
            continue
        first, second = col[own[0::2]].mean(), col[own[1::2]].mean()
        means.append((first + second) / 2)
        diffs.append(first - second)
    assert len(means) >= 20, f"too few devices with windows for {feature}"
    noise = np.var(diffs, ddof=1) / 4  # var of the mean of the halves under pure noise
    return float(np.var(means, ddof=1) / noise)


@pytest.mark.parametrize(
    ("task", "feature", "rows", "why"),
    [
        ("maintenance", "temperature_c", "healthy", "site ambient and per-sensor offset"),
        ("maintenance", "amp_1x", "healthy", "residual imbalance x line speed squared"),
        ("maintenance", "log_rms", "healthy", "mounting gain and noise floor"),
        ("wearables", "acc_mean_y", "standing", "each patient's sensor orientation"),
        ("wearables", "hr_mean", "sitting", "resting heart rate"),
        ("wearables", "dominant_hz", "walking", "gait cadence"),
        ("mobility", "speed_mean", None, "desired speed, road mix and weather"),
        ("mobility", "time_headway_min", None, "the driver's time headway"),
        ("mobility", "steering_sd", None, "lane-keeping corrections"),
    ],
)
def test_devices_really_differ(task: str, feature: str, rows: str | None, why: str) -> None:
    """Per-device means differ far more than the noise within a device explains (``why``: the
    generator's per-device parameter behind it)."""
    fleet = _task_fleet(task)
    selected = None
    if rows is not None:
        classes = fleet.class_names
        selected = fleet.y == classes.index(rows)
    ratio = _between_device_ratio(fleet, feature, selected)
    assert ratio > 10, f"{feature} ({why}): between-device / split-half variance {ratio:.1f}"


def test_split_half_ratio_is_about_one_without_device_effects() -> None:
    """The statistic above, on the same windows with the devices shuffled: no effect, ~1."""
    fleet = _task_fleet("mobility")
    shuffled = Fleet(
        x=fleet.x,
        y=fleet.y,
        device=np.random.default_rng(0).permutation(fleet.device),
        group=fleet.group,
        raw_bytes=fleet.raw_bytes,
        feature_names=fleet.feature_names,
        class_names=fleet.class_names,
    )
    assert _between_device_ratio(shuffled, "speed_mean") < 2.0


@pytest.mark.parametrize(
    "task", ["maintenance", "maintenance_warning", "wearables_anomaly", "mobility"]
)
def test_rare_label_rates_differ_between_devices(task: str) -> None:
    """Faults, warnings, abnormal HR and events concentrate on some devices (chi-square test of
    one rate for all), and many devices never see one: what makes local-only learning fail."""
    from scipy.stats import chi2_contingency

    fleet = _task_fleet(task)
    rare = fleet.y > 0
    devices = np.unique(fleet.device)
    table = np.array([[rare[fleet.device == d].sum(), (~rare[fleet.device == d]).sum()] for d in devices])  # fmt: skip
    assert chi2_contingency(table).pvalue < 1e-10
    assert (table[:, 0] == 0).mean() > 0.1  # devices that never see the rare class


@pytest.mark.parametrize(
    ("task", "low", "high"),
    [
        # maintenance.py: ~9 % faulty windows, 2–3 % per fault kind; ~6 % early warnings
        ("maintenance", 0.05, 0.15),
        ("maintenance_warning", 0.03, 0.10),
        # wearables.py: a third of patients, a quarter of their bouts: ~8 % abnormal windows
        ("wearables_anomaly", 0.04, 0.15),
        # telemetry.py: ~4 % of windows have a harsh-braking or unsafe-headway event ahead
        ("mobility", 0.02, 0.06),
    ],
)
def test_labels_are_imbalanced_as_documented(task: str, low: float, high: float) -> None:
    fleet = _task_fleet(task)
    share = np.bincount(fleet.y, minlength=len(fleet.class_names)) / len(fleet.y)
    assert low < 1.0 - share[0] < high, share
    if task == "maintenance":  # every fault kind is rare, none absent
        assert ((share[1:] > 0.01) & (share[1:] < 0.05)).all(), share


def test_warning_windows_end_at_the_failure_and_the_machine_is_repaired() -> None:
    """Read from the task's fleet alone (windows are in time order per machine): the warning
    windows of a machine are one run; after it the machine is healthy again (repaired); a
    machine's fault windows end where its warning run ends."""
    fleet = _task_fleet("maintenance")
    warning = _task_fleet("maintenance_warning").y
    warned = 0
    for d in np.unique(fleet.device):
        rows = np.flatnonzero(fleet.device == d)
        w, y = warning[rows], fleet.y[rows]
        if not w.any():
            continue
        warned += 1
        run = np.flatnonzero(w)
        assert (np.diff(run) == 1).all(), f"machine {d}: warnings {run} are not one run"
        after = slice(run[-1] + 1, None)
        assert (y[after] == 0).all(), f"machine {d}: still faulty after its failure"
        if (y > 0).any():
            assert np.flatnonzero(y)[-1] == run[-1]
    assert warned >= 10


def test_warning_label_is_exactly_the_days_before_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The generator's record of every machine's life (window times, failure, degradation)
    against the documented labels: warning = 1 exactly when fail − warning_days ≤ t < fail;
    the fault label once s = ((t − onset) / duration)² ≥ detect_severity, until the failure."""
    lives: list[maintenance._Life] = []
    real = maintenance._machine_life

    def spy(rng: np.random.Generator, config: MaintenanceConfig, kind: int) -> maintenance._Life:
        lives.append(real(rng, config, kind))
        return lives[-1]

    monkeypatch.setattr(maintenance, "_machine_life", spy)
    cfg = MaintenanceConfig(sites=3, machines_per_site=8, windows_per_machine=60, samples=512)
    fleet, warning = generate_maintenance(cfg, np.random.default_rng(11))
    assert len(lives) == cfg.sites * cfg.machines_per_site
    failing = 0
    for machine, life in enumerate(lives):
        rows = fleet.device == machine
        t = life.t
        if life.fail is None or life.duration is None:
            assert life.fault == "healthy"
            assert not warning[rows].any() and not fleet.y[rows].any()
            continue
        failing += 1
        assert 0.6 * cfg.life_days <= life.fail <= 1.05 * cfg.life_days
        assert cfg.degradation_days[0] <= life.duration <= cfg.degradation_days[1]
        expected = (t >= life.fail - cfg.warning_days) & (t < life.fail)
        np.testing.assert_array_equal(warning[rows], expected.astype(np.int64))
        onset = life.fail - life.duration
        severity = np.where((t >= onset) & (t < life.fail), ((t - onset) / life.duration) ** 2, 0)
        kind = FAULTS.index({"outer": "outer_race", "inner": "inner_race"}.get(life.fault, life.fault))  # fmt: skip
        faulty = severity >= cfg.detect_severity
        np.testing.assert_array_equal(fleet.y[rows], np.where(faulty, kind, 0))
    assert failing >= 5 and warning.sum() > 0


# -- mobility: the unsafe-headway half of the label ---------------------------------------------


def _steady(t: Telemetry, *, speed: float, headway_at: dict[int, float]) -> Telemetry:
    """A car cruising at ``speed`` with nobody ahead, except the given gaps at given samples;
    no harsh braking anywhere, so only the headway can raise the label."""
    n = len(t.speed)
    headway = np.full(n, 150.0)
    for k, gap in headway_at.items():
        headway[k] = gap
    return type(t)(
        **{
            **t.__dict__,
            "speed": np.full(n, speed),
            "accel": np.zeros(n),
            "brake": np.zeros(n),
            "headway": headway,
        }
    )


def test_unsafe_headway_ahead_is_labelled() -> None:
    """Time headway gap / speed below 0.7 s, above walking pace (5 m/s), within the 3 s horizon."""
    t = simulate_traffic(SMALL_TRAFFIC, np.random.default_rng(2))[0]
    spec = WindowSpec()
    ends = np.arange(50, len(t.speed) - 30, 20)
    ahead = ((ends <= 400) & (ends + 30 > 400)).astype(np.int64)
    # 20 m/s with 13 m to the car ahead: 0.65 s of headway at t = 40 s
    _, y = telemetry_windows(_steady(t, speed=20.0, headway_at={400: 13.0}), spec)
    np.testing.assert_array_equal(y, ahead)
    assert ahead.sum() >= 1
    # 0.75 s is not unsafe; and the threshold is the spec's
    _, y = telemetry_windows(_steady(t, speed=20.0, headway_at={400: 15.0}), spec)
    assert not y.any()
    stricter = WindowSpec(unsafe_headway_s=0.8)
    _, y = telemetry_windows(_steady(t, speed=20.0, headway_at={400: 15.0}), stricter)
    np.testing.assert_array_equal(y, ahead)
    # at walking pace a short gap is queueing, not unsafe: 4 m/s with 2 m (0.5 s) is no event
    _, y = telemetry_windows(_steady(t, speed=4.0, headway_at={400: 2.0}), spec)
    assert not y.any()
    _, y = telemetry_windows(_steady(t, speed=5.5, headway_at={400: 2.0}), spec)
    np.testing.assert_array_equal(y, ahead)


def test_simulated_labels_follow_the_definition() -> None:
    """Every window of simulated cars, relabelled here from the definition sample by sample."""
    logs = simulate_traffic(
        TrafficConfig(regions=2, cars_per_region=4, trip_s=240.0), np.random.default_rng(3)
    )
    spec = WindowSpec()
    hist, stride, horizon = 50, 20, 30  # 5 s, 2 s, 3 s at 10 Hz
    positives = 0
    for t in logs:
        _, y = telemetry_windows(t, spec)
        harsh = t.accel < -spec.harsh_mps2
        unsafe = (t.headway / np.maximum(t.speed, 0.1) < spec.unsafe_headway_s) & (
            t.speed > spec.min_speed_mps
        )
        ends = range(hist, len(t.speed) - horizon, stride)
        expected = [int((harsh | unsafe)[e : e + horizon].any()) for e in ends]
        np.testing.assert_array_equal(y, expected)
        positives += int(y.sum())
    assert positives > 0
