"""Predictive maintenance: a fleet of pumps/motors at several sites, vibration + temperature.

Every machine belongs to a site, and the site sets the operating conditions: line speed (shaft
frequency), load profile, ambient temperature (with a daily cycle) and the bearing model fitted.
Every machine has its own structural resonance, damping, mounting gain, noise floor, residual
imbalance and impeller vane count. The vibration of each window is synthesised by
:func:`fedge.usecases.vibration.vibration_window` (defect frequencies, resonance ringing, 1×/2×).

**Faults are rare at any one machine.** Over its observed life (``life_days``) a machine
develops at most one fault (with probability ``fault_probability``): imbalance, misalignment,
outer-race or inner-race spall. Its severity grows over ``degradation_days`` as
s(t) = ((t − onset) / duration)² until failure, when the machine is repaired (healthy again).
A window is labelled with the fault once s ≥ ``detect_severity``; the **early-warning** label is
1 in the ``warning_days`` before failure (degradation that ends in a failure), i.e. for a window
at time t exactly when fail − ``warning_days`` ≤ t < fail. A failure may fall after the observed
span (fail is drawn in [0.6, 1.05] × ``life_days``): its warning windows are those observed.

With the defaults (the ``maintenance`` task's fleet) about 9 % of the windows show a fault, 2–3 %
each kind, and about 6 % carry the early warning; most machines never fail while observed.

**Temperature** (bearing housing, °C) is ambient (site mean + daily cycle) + a rise proportional
to load × speed (friction and motor losses) + fault heating (a spalled bearing or a misaligned
coupling runs hotter) + a per-sensor offset and noise: the same reading means different things
at different sites, which is what the model must learn across sites.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedge.usecases.fleet import Fleet
from fedge.usecases.vibration import (
    BEARINGS,
    VIBRATION_FEATURES,
    vibration_features,
    vibration_window,
)

__all__ = [
    "FAULTS",
    "MAINTENANCE_FEATURES",
    "OPERATING_FEATURES",
    "WARNING_CLASSES",
    "MaintenanceConfig",
    "generate_maintenance",
    "warning_fleet",
]

FAULTS = ("healthy", "imbalance", "misalignment", "outer_race", "inner_race")
WARNING_CLASSES = ("normal", "fails_soon")  # the early-warning labels
_FAULT_MIX = np.array([0.25, 0.25, 0.3, 0.2])  # how common each fault type is
_FAULT_HEAT = {"imbalance": 2.0, "misalignment": 6.0, "outer": 8.0, "inner": 10.0}  # °C at s=1
_SIGNAL_FAULT = ("healthy", "imbalance", "misalignment", "outer", "inner")
OPERATING_FEATURES = ("temperature_c", "shaft_hz", "load")
# The columns of a maintenance window (and of the CWRU loader's rows), in order.
MAINTENANCE_FEATURES = (*VIBRATION_FEATURES, *OPERATING_FEATURES)


@dataclass(frozen=True)
class MaintenanceConfig:
    """Fleet shape and physics ranges (defaults: 96 machines at 8 sites, 40 windows each)."""

    sites: int = 8
    machines_per_site: int = 12
    windows_per_machine: int = 40
    fs: float = 12_000.0  # accelerometer sample rate, Hz (the CWRU rig's)
    samples: int = 4_096  # samples per window (0.34 s)
    life_days: float = 60.0  # observed span per machine
    fault_probability: float = 0.6  # a machine develops a fault during the span
    degradation_days: tuple[float, float] = (10.0, 25.0)
    detect_severity: float = 0.2  # labelled faulty from this severity on
    warning_days: float = 7.0  # early-warning horizon before failure


def _severity(t: NDArray[np.float64], fail: float, duration: float) -> NDArray[np.float64]:
    s = ((t - (fail - duration)) / duration) ** 2
    return np.where((t >= fail - duration) & (t < fail), np.clip(s, 0, 1), 0.0)


@dataclass(frozen=True)
class _Life:
    """One machine's observed span: window times (days), its fault and its failure, if any."""

    t: NDArray[np.float64]
    fault: str  # one of _SIGNAL_FAULT ("healthy": this machine never degrades)
    fail: float | None  # failure time, days (may fall after the observed span)
    duration: float | None  # degradation length before the failure, days
    severity: NDArray[np.float64]
    warning: NDArray[np.int64]  # 1 when fail - warning_days <= t < fail


def _machine_life(rng: np.random.Generator, c: MaintenanceConfig, kind: int) -> _Life:
    """Window times, and whether (and when) the machine degrades to a failure of ``kind``."""
    t = np.sort(rng.uniform(0.0, c.life_days, c.windows_per_machine))
    if rng.random() >= c.fault_probability:
        return _Life(t, "healthy", None, None, np.zeros_like(t), np.zeros(len(t), np.int64))
    duration = rng.uniform(*c.degradation_days)
    fail = rng.uniform(0.6, 1.05) * c.life_days
    warning = ((t >= fail - c.warning_days) & (t < fail)).astype(np.int64)
    return _Life(t, _SIGNAL_FAULT[kind + 1], fail, duration, _severity(t, fail, duration), warning)


def generate_maintenance(
    config: MaintenanceConfig, rng: np.random.Generator
) -> tuple[Fleet, NDArray[np.int64]]:
    """The fleet's feature windows labelled with the fault, and the early-warning labels."""
    c = config
    feats, labels, warn, device, group, shaft_all, temp_all, load_all = ([] for _ in range(8))
    for site in range(c.sites):
        ambient = rng.uniform(12.0, 35.0)
        line_hz = rng.uniform(20.0, 50.0)  # 1,200–3,000 rpm
        load_mean = rng.uniform(0.4, 0.9)
        bearing = BEARINGS[int(rng.integers(len(BEARINGS)))]
        day_phase = rng.uniform(0, 2 * np.pi)
        # The site's failing machines take the fault types in turn (shuffled), so every site
        # sees every kind over time, yet any one machine sees at most one.
        kinds = rng.permutation(np.repeat(np.arange(4), c.machines_per_site // 4 + 1))
        kinds = kinds[np.argsort(rng.random(len(kinds)) / _FAULT_MIX[kinds])]
        for m in range(c.machines_per_site):
            machine = site * c.machines_per_site + m
            resonance = rng.uniform(2_500.0, 4_800.0)
            damping = rng.uniform(0.03, 0.08)
            gain = float(np.exp(rng.normal(0.0, 0.2)))
            noise = rng.uniform(0.05, 0.15)
            residual = rng.uniform(0.05, 0.2)
            base_2x = rng.uniform(0.03, 0.1)
            vanes = int(rng.integers(5, 8))
            offset = rng.normal(0.0, 1.0)
            life = _machine_life(rng, c, int(kinds[m]))
            t, fault_kind, sev, warning = life.t, life.fault, life.severity, life.warning
            shaft = line_hz * rng.uniform(0.92, 1.08, len(t))
            load = np.clip(load_mean + rng.normal(0, 0.1, len(t)), 0.1, 1.0)
            signals = np.stack(
                [
                    vibration_window(
                        rng,
                        fs=c.fs,
                        samples=c.samples,
                        shaft_hz=float(shaft[i]),
                        load=float(load[i]),
                        bearing=bearing,
                        resonance_hz=resonance,
                        damping=damping,
                        residual_imbalance=residual,
                        base_2x=base_2x,
                        vane_order=vanes,
                        noise=noise,
                        gain=gain,
                        fault=fault_kind,
                        severity=float(sev[i]),
                    )
                    for i in range(len(t))
                ]
            )
            f, _ = vibration_features(signals, c.fs, shaft)
            heat = _FAULT_HEAT.get(fault_kind, 0.0) * sev
            temp = (
                ambient
                + 4.0 * np.sin(2 * np.pi * t + day_phase)
                + 18.0 * load * shaft / 35.0
                + heat
                + offset
                + rng.normal(0, 0.3, len(t))
            )
            label = np.where(sev >= c.detect_severity, _SIGNAL_FAULT.index(fault_kind), 0)
            feats.append(f)
            labels.append(label.astype(np.int64))
            warn.append(warning)
            device.append(np.full(len(t), machine, dtype=np.int64))
            group.append(np.full(len(t), site, dtype=np.int64))
            shaft_all.append(shaft)
            temp_all.append(temp)
            load_all.append(load)
    operating = np.column_stack(
        [np.concatenate(temp_all), np.concatenate(shaft_all), np.concatenate(load_all)]
    )
    x = np.concatenate([np.concatenate(feats), operating.astype(np.float32)], axis=1)
    n = len(x)
    raw = (c.samples + 1) * 4  # float32 vibration samples + one temperature reading
    fleet = Fleet(
        x=x.astype(np.float32),
        y=np.concatenate(labels),
        device=np.concatenate(device),
        group=np.concatenate(group),
        raw_bytes=np.full(n, raw, dtype=np.int64),
        feature_names=MAINTENANCE_FEATURES,
        class_names=FAULTS,
    )
    return fleet, np.concatenate(warn)


def warning_fleet(fleet: Fleet, warning: NDArray[np.int64]) -> Fleet:
    """The same windows labelled for early warning: 1 = fails within the warning horizon."""
    return dataclasses.replace(fleet, y=warning, class_names=WARNING_CLASSES)
