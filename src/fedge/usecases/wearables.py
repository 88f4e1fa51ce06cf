"""Remote patient monitoring: wearables with accelerometer, gyroscope and heart rate.

Each patient wears a sensor (50 Hz, 2.56 s windows of 128 samples, the UCI HAR layout) and goes
through bouts of activity: sitting, standing, walking, stairs, running. The physics:

- **Gait.** Walking is a periodic vertical acceleration at the step cadence f (about 1.6–2.0
  steps/s, set by the patient's leg length and habits), with its second harmonic (heel strike),
  a forward component at f and a lateral sway at the stride frequency f/2; the shank/trunk pitch
  rate (gyroscope) oscillates at f/2. Stairs are slower (≈ 0.8 f) with more vertical and forward
  work; running is 2.5–3 steps/s with impacts of about 1 g. Still postures show gravity only
  (plus sway): the gravity direction in the sensor frame tells sitting (trunk/hip tilted) from
  standing. Every patient's sensor sits at a slightly different orientation (a random rotation
  of up to ~25°) with its own gain and noise.
- **Heart rate.** HR follows activity as a first-order system, τ·dHR/dt = HR_target − HR, with
  HR_target = HR_rest + k·I(activity)·(HR_max − HR_rest) (Karvonen's heart-rate reserve, I the
  activity's intensity), HR_max = 208 − 0.7·age (Tanaka et al. 2001), a per-patient resting HR,
  effort factor k and time constant τ (20–50 s). Within a bout the solution is closed-form:
  HR(t) = HR_target + (HR_0 − HR_target)·exp(−t/τ). PPG measurement noise grows with motion.
- **Abnormal HR response** (about a third of patients have a condition, in a quarter of their
  bouts): inappropriate tachycardia (+25–45 bpm whatever the activity), chronotropic
  incompetence (the rise with exercise is only ~30 % of normal) or an irregular rhythm (large
  beat-to-beat variability). A window is labelled anomalous when its rhythm is irregular or its
  heart rate is more than ``abnormal_bpm`` from the patient's *normal* response to the same
  activity history (the same first-order system without the condition): with τ of 20–50 s an
  episode's first seconds look normal and its after-effect lingers into the next bout, and the
  label follows what the heart does, not the episode's bookkeeping. A classifier's probability
  of that class is the anomaly score. With the defaults (the tasks' cohort) about 8 % of the
  windows are abnormal, on about a fifth of the patients; most patients never show one.

Features per window (:func:`wearable_features`): per-axis mean and spread of acceleration
(posture), band energies and dominant frequency of the acceleration and rotation magnitudes
(cadence), and the HR level, slope, spread, its change since the previous window, its excess over
the patient's own running resting estimate, and the recent exertion the heart is responding to
(motion intensity smoothed with a 30 s time constant, like HR itself) — the history features are
computed on the device from this and earlier windows only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedge.usecases.fleet import Fleet

__all__ = [
    "ACTIVITIES",
    "ANOMALY_CLASSES",
    "WearablesConfig",
    "anomaly_fleet",
    "generate_wearables",
    "wearable_features",
]

ACTIVITIES = ("sitting", "standing", "walking", "stairs", "running")
ANOMALY_CLASSES = ("normal", "abnormal_hr")  # the heart-rate anomaly labels
_MIX = np.array([0.35, 0.2, 0.27, 0.08, 0.10])  # population share of each activity
_INTENSITY = np.array([0.0, 0.05, 0.28, 0.45, 0.72])  # fraction of heart-rate reserve
_BANDS_HZ = ((0.3, 1.0), (1.0, 1.5), (1.5, 2.2), (2.2, 3.2), (3.2, 5.0), (5.0, 10.0))
FS = 50.0
SAMPLES = 128
_BASELINE_WINDOWS = 100  # the device's resting-HR estimate looks this far back
_EXERTION_TAU_S = 30.0  # smoothing of motion intensity: the typical HR time constant


@dataclass(frozen=True)
class WearablesConfig:
    """Cohort shape (defaults: 100 patients at 5 clinics, 40–120 windows each)."""

    clinics: int = 5
    patients_per_clinic: int = 20
    windows: tuple[int, int] = (40, 120)  # windows per patient, uniform in this range
    bout_windows: tuple[int, int] = (4, 14)  # bout length in windows (10–36 s)
    condition_probability: float = 0.35
    episode_probability: float = 0.25
    abnormal_bpm: float = 10.0  # |HR − normal response| above this labels a window abnormal


def _rotation(rng: np.random.Generator, max_deg: float) -> NDArray[np.float64]:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    a = np.radians(rng.uniform(0, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot: NDArray[np.float64] = np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k  # Rodrigues
    return rot


def _motion(
    rng: np.random.Generator, activity: NDArray[np.int64], cadence: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Body-frame acceleration (g) and rotation rate (rad/s), shape (windows, 128, 3)."""
    w = len(activity)
    t = np.arange(SAMPLES) / FS + rng.uniform(0, 10, (w, 1))
    f = cadence[:, None]
    ph = rng.uniform(0, 2 * np.pi, (w, 4))
    amp_v = np.array([0.0, 0.0, 0.22, 0.3, 0.9])[activity][:, None]
    amp_f = np.array([0.0, 0.0, 0.1, 0.16, 0.3])[activity][:, None]
    amp_l = np.array([0.0, 0.0, 0.06, 0.07, 0.15])[activity][:, None]
    amp_g = np.array([0.0, 0.0, 0.6, 0.8, 1.8])[activity][:, None]
    step = 2 * np.pi * f * t
    vertical = amp_v * (np.sin(step + ph[:, :1]) + 0.35 * np.sin(2 * step + ph[:, 1:2]))
    forward = amp_f * np.sin(step + ph[:, 2:3])
    lateral = amp_l * np.sin(0.5 * step + ph[:, 3:4])
    lean = np.radians(np.array([55.0, 3.0, 5.0, 8.0, 12.0])[activity])[:, None]
    acc = np.stack(
        [forward + np.sin(lean), lateral, vertical + np.cos(lean)], axis=-1
    )  # gravity + motion, g
    sway = 0.015 * rng.standard_normal((w, SAMPLES, 3)).cumsum(axis=1) / np.sqrt(SAMPLES)
    acc += sway
    gyro = np.stack(
        [
            0.3 * amp_g * np.sin(0.5 * step + ph[:, 3:4]),
            amp_g * np.sin(0.5 * step + ph[:, 0:1]),
            0.2 * amp_g * np.sin(step + ph[:, 2:3]),
        ],
        axis=-1,
    )
    return acc, gyro


def _band_energies(
    signal: NDArray[np.float64], fs: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    centred = signal - signal.mean(axis=1, keepdims=True)
    power = np.abs(np.fft.rfft(centred * np.hanning(signal.shape[1]), axis=1)) ** 2
    freqs = np.fft.rfftfreq(signal.shape[1], 1 / fs)
    bands = [
        np.log10(power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) + 1e-4) for lo, hi in _BANDS_HZ
    ]
    gait = (freqs >= 0.5) & (freqs <= 4.0)
    dominant = freqs[gait][np.argmax(power[:, gait], axis=1)]
    return np.column_stack(bands), dominant


def wearable_features(
    acc: NDArray[np.float64],
    gyro: NDArray[np.float64],
    hr: NDArray[np.float64] | None,
    *,
    fs: float = FS,
) -> tuple[NDArray[np.float32], tuple[str, ...]]:
    """Features of windows: acc/gyro (windows, samples, 3) at ``fs`` Hz; hr likewise or None."""
    acc_mag = np.linalg.norm(acc, axis=-1)
    gyro_mag = np.linalg.norm(gyro, axis=-1)
    acc_bands, dominant = _band_energies(acc_mag, fs)
    gyro_bands, _ = _band_energies(gyro_mag, fs)
    cols = [
        acc.mean(axis=1),
        np.log10(acc.std(axis=1) + 1e-3),
        np.log10(acc_mag.std(axis=1, keepdims=True) + 1e-3),
        acc_bands,
        dominant[:, None],
        np.log10(gyro_mag.mean(axis=1, keepdims=True) + 1e-3),
        gyro_bands,
    ]
    names = [
        *(f"acc_mean_{a}" for a in "xyz"),
        *(f"acc_logstd_{a}" for a in "xyz"),
        "acc_mag_logstd",
        *(f"acc_band_{lo}_{hi}hz" for lo, hi in _BANDS_HZ),
        "dominant_hz",
        "gyro_mag_logmean",
        *(f"gyro_band_{lo}_{hi}hz" for lo, hi in _BANDS_HZ),
    ]
    if hr is not None:
        from scipy.signal import lfilter

        mean = hr.mean(axis=1)
        history = np.concatenate([np.full(_BASELINE_WINDOWS - 1, np.nan), mean])
        recent = np.lib.stride_tricks.sliding_window_view(history, _BASELINE_WINDOWS)
        baseline = np.nanpercentile(recent, 10, axis=1)  # causal: this and earlier windows
        t = np.arange(hr.shape[1]) / fs - (hr.shape[1] - 1) / fs / 2
        slope = (hr - mean[:, None]) @ t / (t @ t)  # least-squares slope, bpm/s
        change = np.diff(mean, prepend=mean[:1]) / 10  # since the previous window
        # recent exertion: motion intensity (g RMS, about proportional to the share of heart-rate
        # reserve an activity takes) through the heart's first-order lag (causal EMA)
        intensity = acc_mag.std(axis=1)
        a = 1.0 - np.exp(-hr.shape[1] / fs / _EXERTION_TAU_S)
        exertion = lfilter([a], [1.0, a - 1.0], intensity - intensity[0]) + intensity[0]
        excess = mean - baseline
        cols += [
            np.column_stack(
                [
                    mean / 100,
                    slope,
                    np.log1p(hr.std(axis=1)),
                    excess / 20,
                    change,
                    exertion,
                    _own_response_residual(exertion, excess) / 20,
                ]
            )
        ]
        names += [
            "hr_mean",
            "hr_slope",
            "hr_logstd",
            "hr_over_rest",
            "hr_change",
            "exertion",
            "hr_vs_own_response",
        ]
    return np.concatenate(cols, axis=1).astype(np.float32), tuple(names)


def _own_response_residual(
    exertion: NDArray[np.float64], excess: NDArray[np.float64]
) -> NDArray[np.float64]:
    """HR excess over rest minus what this patient's own earlier windows predict for the same
    exertion: a least-squares line excess ≈ a + b·exertion fitted on the previous
    ``_BASELINE_WINDOWS`` windows (sliding sums, causal); 0 until 10 windows are seen."""
    n, k = len(exertion), _BASELINE_WINDOWS
    sums = [np.concatenate([[0.0], np.cumsum(v)]) for v in (exertion, excess, exertion**2)]
    sums.append(np.concatenate([[0.0], np.cumsum(exertion * excess)]))
    ends = np.arange(n)  # window i is fitted on windows [max(0, i − k), i)
    starts = np.maximum(0, ends - k)
    count = (ends - starts).astype(np.float64)
    sx, sy, sxx, sxy = (c[ends] - c[starts] for c in sums)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = sxx - sx * sx / count
        b = np.where(var > 1e-6, (sxy - sx * sy / count) / var, 0.0)
        a = (sy - b * sx) / count
    return np.where(count >= 10, excess - (a + b * exertion), 0.0)


def _heart_rate(
    rng: np.random.Generator,
    bouts: list[tuple[int, int, bool]],
    rest: float,
    hr_max: float,
    effort: float,
    tau: float,
    condition: str | None,
    abnormal_bpm: float,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """HR at every sample of every window (closed-form first-order response per bout), and
    each window's abnormal label: an irregular rhythm, or a mean HR more than ``abnormal_bpm``
    from the normal response (the same bouts and dynamics without the condition)."""
    out, labels = [], []
    hr0 = normal0 = rest
    for activity, length, abnormal in bouts:
        rise = effort * _INTENSITY[activity] * (hr_max - rest)
        target = normal_target = rest + rise
        if abnormal and condition == "tachycardia":
            target += rng.uniform(25, 45)
        elif abnormal and condition == "incompetence":
            target = rest + 0.3 * rise
        t = np.arange(length * SAMPLES) / FS
        decay = np.exp(-t / tau)
        hr = target + (hr0 - target) * decay
        normal = normal_target + (normal0 - normal_target) * decay
        hr0, normal0 = float(hr[-1]), float(normal[-1])
        deviation = np.abs(hr - normal).reshape(length, SAMPLES).mean(axis=1)
        irregular = abnormal and condition == "irregular"
        labels.append(((deviation > abnormal_bpm) | irregular).astype(np.int64))
        noise_sd = 1.0 + 3.0 * _INTENSITY[activity]
        if irregular:
            hr = hr + 8.0 + rng.normal(0, 12.0, len(hr))
        beat = rng.normal(0, noise_sd, len(hr) // 25 + 1).repeat(25)[: len(hr)]  # ~2 Hz update
        out.append((hr + beat).reshape(length, SAMPLES))
    return np.concatenate(out), np.concatenate(labels)


def generate_wearables(
    config: WearablesConfig, rng: np.random.Generator
) -> tuple[Fleet, NDArray[np.int64]]:
    """Activity-labelled feature windows of every patient, and the abnormal-HR labels."""
    c = config
    xs, ys, anomalies, device, group = [], [], [], [], []
    names: tuple[str, ...] = ()
    for clinic in range(c.clinics):
        clinic_tilt = rng.uniform(5, 25)  # how carefully this clinic's staff fit the sensors
        for p in range(c.patients_per_clinic):
            patient = clinic * c.patients_per_clinic + p
            age = rng.uniform(25, 80)
            rest = float(np.clip(rng.normal(66, 8), 48, 92))
            hr_max = 208 - 0.7 * age
            effort = rng.uniform(0.8, 1.2)
            tau = rng.uniform(20, 50)
            mix = rng.dirichlet(30 * _MIX)
            if age > 60:
                mix[4] = 0.0  # older patients in this cohort do not run
            mix /= mix.sum()
            condition = None
            if rng.random() < c.condition_probability:
                condition = ("tachycardia", "incompetence", "irregular")[int(rng.integers(3))]
            total = int(rng.integers(c.windows[0], c.windows[1] + 1))
            bouts: list[tuple[int, int, bool]] = []
            while sum(b[1] for b in bouts) < total:
                act = int(rng.choice(5, p=mix))
                length = int(rng.integers(c.bout_windows[0], c.bout_windows[1] + 1))
                length = min(length, total - sum(b[1] for b in bouts))
                eligible = condition != "incompetence" or act >= 2
                abnormal = (
                    condition is not None and eligible and rng.random() < c.episode_probability
                )
                bouts.append((act, length, abnormal))
            activity = np.concatenate([np.full(n, a, np.int64) for a, n, _ in bouts])
            walk = float(np.clip(rng.normal(1.8, 0.1), 1.55, 2.05))
            base = np.array([0.0, 0.0, walk, 0.8 * walk, rng.uniform(2.5, 3.0)])
            cadence = base[activity] * rng.normal(1.0, 0.03, len(activity))
            acc, gyro = _motion(rng, activity, cadence)
            rot = _rotation(rng, clinic_tilt)
            gain = rng.normal(1.0, 0.05)
            acc = gain * acc @ rot.T + rng.normal(0, 0.015, acc.shape)
            gyro = gyro @ rot.T + rng.normal(0, 0.02, gyro.shape)
            hr, anomaly = _heart_rate(
                rng, bouts, rest, hr_max, effort, tau, condition, c.abnormal_bpm
            )
            f, names = wearable_features(acc, gyro, hr)
            xs.append(f)
            ys.append(activity)
            anomalies.append(anomaly)
            device.append(np.full(len(activity), patient, np.int64))
            group.append(np.full(len(activity), clinic, np.int64))
    y = np.concatenate(ys)
    raw = SAMPLES * 7 * 4  # float32 acc xyz + gyro xyz + HR per sample
    fleet = Fleet(
        x=np.concatenate(xs),
        y=y,
        device=np.concatenate(device),
        group=np.concatenate(group),
        raw_bytes=np.full(len(y), raw, np.int64),
        feature_names=names,
        class_names=ACTIVITIES,
    )
    return fleet, np.concatenate(anomalies)


def anomaly_fleet(fleet: Fleet, anomaly: NDArray[np.int64]) -> Fleet:
    """The same windows labelled for abnormal heart-rate response (1 = abnormal)."""
    return dataclasses.replace(fleet, y=anomaly, class_names=ANOMALY_CLASSES)
