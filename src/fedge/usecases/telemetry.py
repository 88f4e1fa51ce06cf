"""Driving telemetry → feature windows labelled "harsh braking or unsafe headway ahead".

The same code windows simulated logs (:mod:`fedge.usecases.traffic`) and logs read from the
common CSV layout (:func:`read_telemetry_csv`): one row per sample, columns

    vehicle_id, timestamp_s, speed_mps, accel_mps2, steering_deg, brake, headway_m,
    relative_speed_mps[, road_type][, weather]

(by name, in any order; ``headway_m``, ``road_type`` and ``weather`` optional, a missing headway
an empty field; rows in any order, sorted by time per vehicle: :func:`read_telemetry_csv` says
what it accepts and refuses). A window is the last ``history_s`` seconds ending at time t; its
label is 1 when, within the next ``horizon_s`` seconds, the car brakes harder than
``harsh_mps2`` (≈ 0.3 g, a common telematics threshold) or its time headway (gap / speed) falls below ``unsafe_headway_s`` while faster than
``min_speed_mps`` (walking pace: a short gap in a queue is not unsafe). Events are rare: on the
simulated fleet of the ``mobility`` task about 4 % of the windows have one ahead, and their rate
differs from car to car (driver, road, weather).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedge.errors import DataError
from fedge.usecases.fleet import Fleet
from fedge.usecases.traffic import RADAR_RANGE_M, ROADS, WEATHER, Telemetry

__all__ = [
    "CSV_COLUMNS",
    "EVENT_CLASSES",
    "TELEMETRY_FEATURES",
    "WindowSpec",
    "read_telemetry_csv",
    "telemetry_fleet",
    "telemetry_windows",
    "write_telemetry_csv",
]

CSV_COLUMNS = (
    "vehicle_id",
    "timestamp_s",
    "speed_mps",
    "accel_mps2",
    "steering_deg",
    "brake",
    "headway_m",
    "relative_speed_mps",
    "road_type",
    "weather",
)
EVENT_CLASSES = ("safe", "event_ahead")  # no event / harsh braking or unsafe headway ahead
TELEMETRY_FEATURES = (  # the columns of a telemetry window, in order
    "speed_last", "speed_mean", "speed_change", "accel_last", "accel_min", "accel_mean",
    "jerk_last", "brake_max", "brake_last", "headway_last", "headway_min", "headway_change",
    "relspeed_last", "relspeed_min", "inv_ttc_last", "inv_ttc_max", "time_headway_last",
    "time_headway_min", "steering_sd", "steering_absmean", "lead_accel_last", "lead_accel_min",
    "brake_needed_last", *(f"road_{r}" for r in ROADS), *(f"weather_{w}" for w in WEATHER),
)  # fmt: skip


@dataclass(frozen=True)
class WindowSpec:
    """Windowing and labelling (seconds, m/s²)."""

    history_s: float = 5.0
    stride_s: float = 2.0
    horizon_s: float = 3.0
    harsh_mps2: float = 3.0
    unsafe_headway_s: float = 0.7
    min_speed_mps: float = 5.0


def _events(t: Telemetry, spec: WindowSpec) -> NDArray[np.bool_]:
    time_headway = t.headway / np.maximum(t.speed, 0.1)
    unsafe = (time_headway < spec.unsafe_headway_s) & (t.speed > spec.min_speed_mps)
    return (t.accel < -spec.harsh_mps2) | unsafe


def telemetry_windows(
    t: Telemetry, spec: WindowSpec = WindowSpec()
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Feature windows of one car's log and their "event within the horizon" labels."""
    hist, stride = round(spec.history_s / t.dt), round(spec.stride_s / t.dt)
    horizon = round(spec.horizon_s / t.dt)
    n = len(t.speed)
    ends = np.arange(hist, n - horizon, stride)  # window covers [end - hist, end)
    if len(ends) == 0:
        return np.zeros((0, len(TELEMETRY_FEATURES)), np.float32), np.zeros(0, np.int64)
    idx = ends[:, None] - hist + np.arange(hist)[None, :]
    events = _events(t, spec).astype(np.int64)
    cum = np.concatenate([[0], np.cumsum(events)])
    label = (cum[ends + horizon] - cum[ends] > 0).astype(np.int64)
    v, a, s, dv = t.speed[idx], t.accel[idx], t.headway[idx], t.relative_speed[idx]
    b, st = t.brake[idx], t.steering[idx]
    closing = np.maximum(-dv, 0.0) / np.maximum(s, 0.5)
    th = np.minimum(s / np.maximum(v, 0.5), 10.0)
    # the leader's acceleration, which the radar reveals: own acceleration + d(relative speed)/dt
    # (over 0.5 s); a leader braking hard now is the main cause of harsh braking seconds later
    lag = max(1, round(0.5 / t.dt))
    lead = a[:, lag:] + (dv[:, lag:] - dv[:, :-lag]) / (lag * t.dt)
    # constant deceleration that stops the closing within the gap (kinematics: Δv² / 2s)
    needed = np.maximum(-dv[:, -1], 0.0) ** 2 / (2 * np.maximum(s[:, -1], 0.5))
    cols = [
        v[:, -1], v.mean(1), v[:, -1] - v[:, 0], a[:, -1], a.min(1), a.mean(1),
        (a[:, -1] - a[:, -6]) / (5 * t.dt), b.max(1), b[:, -1],
        s[:, -1] / 50, s.min(1) / 50, (s[:, -1] - s[:, 0]) / 10, dv[:, -1], dv.min(1),
        closing[:, -1], closing.max(1), th[:, -1], th.min(1), st.std(1) / 10,
        np.abs(st).mean(1) / 10, lead[:, -1], lead.min(1), np.minimum(needed, 20.0),
    ]  # fmt: skip
    road = np.eye(len(ROADS))[t.road[ends - 1]]
    weather = np.eye(len(WEATHER))[t.weather[ends - 1]]
    x = np.column_stack([*cols, road, weather]).astype(np.float32)
    return x, label


def telemetry_fleet(logs: Sequence[Telemetry], spec: WindowSpec = WindowSpec()) -> Fleet:
    """Windows of every car; the car is the device, its region the group."""
    xs, ys, dev, grp, raw = [], [], [], [], []
    for t in logs:
        x, y = telemetry_windows(t, spec)
        xs.append(x)
        ys.append(y)
        dev.append(np.full(len(y), t.car, np.int64))
        grp.append(np.full(len(y), t.region, np.int64))
        # Raw bytes behind a window: the new samples since the last window, 7 float32 channels.
        raw.append(np.full(len(y), round(spec.stride_s / t.dt) * 7 * 4, np.int64))
    return Fleet(
        x=np.concatenate(xs),
        y=np.concatenate(ys),
        device=np.concatenate(dev),
        group=np.concatenate(grp),
        raw_bytes=np.concatenate(raw),
        feature_names=TELEMETRY_FEATURES,
        class_names=EVENT_CLASSES,
    )


def write_telemetry_csv(logs: Iterable[Telemetry], path: str | Path) -> None:
    """Write logs in the common CSV layout (one row per sample)."""
    with Path(path).open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for t in logs:
            for k in range(len(t.speed)):
                head = "" if t.headway[k] >= RADAR_RANGE_M else f"{t.headway[k]:.3f}"
                w.writerow(
                    [
                        t.car, f"{k * t.dt:.2f}", f"{t.speed[k]:.4f}", f"{t.accel[k]:.4f}",
                        f"{t.steering[k]:.3f}", f"{t.brake[k]:.4f}", head,
                        f"{t.relative_speed[k]:.4f}", ROADS[t.road[k]], WEATHER[t.weather[k]],
                    ]
                )  # fmt: skip


_LINE = "\x00line"  # where a row was in the file (the header is line 1)


def _column(rows: list[dict[str, str]], name: str, default: float | None = None) -> np.ndarray:
    out = []
    for r in rows:
        value = (r.get(name) or "").strip()
        if value == "":
            if default is None:
                raise DataError(f"line {r[_LINE]}: column {name!r} is empty; it is required")
            out.append(default)
        else:
            try:
                number = float(value)
            except ValueError:
                raise DataError(f"line {r[_LINE]}: {name}={value!r} is not a number") from None
            if not np.isfinite(number):
                raise DataError(f"line {r[_LINE]}: {name}={value!r} is not a finite number")
            out.append(number)
    return np.asarray(out, dtype=np.float64)


def _vehicle_order(vid: str) -> tuple[int, int | str]:
    """Numeric vehicle ids in numeric order (2 before 10), then the others as text."""
    text = vid.strip()
    return (0, int(text)) if text.isdigit() else (1, text)


def read_telemetry_csv(path: str | Path, *, region: int = 0) -> list[Telemetry]:
    """Read logs in the common CSV layout; one :class:`Telemetry` per vehicle, in time order.

    - **Columns** are found by name in the header (any order; extra columns are ignored).
      Required: ``vehicle_id``, ``timestamp_s``, ``speed_mps``, ``accel_mps2``,
      ``steering_deg``, ``brake``, ``relative_speed_mps``. Optional: ``headway_m`` (absent
      column or empty field: no vehicle within radar range), ``road_type`` and ``weather``
      (absent column or empty field: the first name, ``urban`` / ``dry``; names are matched
      case-insensitively).
    - **Rows** may come in any order, vehicles interleaved: each vehicle's samples are sorted
      by ``timestamp_s``. A vehicle with a repeated timestamp is refused (two different
      samples for one instant), as is one with fewer than two samples. The sample interval
      ``dt`` is each vehicle's median timestamp step: the log is taken to be sampled at a
      steady rate.
    - **Vehicles** become ``car`` 0, 1, … in the order of their ``vehicle_id`` (numeric ids
      numerically, e.g. 2 before 10); every log gets ``region``.

    Anything else that cannot be read (a missing required column, an empty required field or
    vehicle id, a value that is not a finite number, an unknown road or weather name) raises
    :class:`~fedge.errors.DataError` naming the file line or the vehicle.
    """
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        required = set(CSV_COLUMNS[:8]) - {"headway_m"}
        missing = required - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path}: missing column(s) {sorted(missing)}; expected {CSV_COLUMNS}")
        rows = []
        for r in reader:
            r[_LINE] = str(reader.line_num)
            rows.append(r)
    if not rows:
        raise DataError(f"{path}: no samples after the header")
    by_vehicle: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        vid = (r["vehicle_id"] or "").strip()
        if not vid:
            raise DataError(f"line {r[_LINE]}: vehicle_id is empty")
        by_vehicle.setdefault(vid, []).append(r)
    logs = []
    ordered = sorted(by_vehicle.items(), key=lambda item: _vehicle_order(item[0]))
    for car, (vid, vrows) in enumerate(ordered):
        ts = _column(vrows, "timestamp_s")
        order = np.argsort(ts, kind="stable")
        rows_sorted = [vrows[i] for i in order]
        steps = np.diff(ts[order])
        if len(steps) == 0:
            raise DataError(f"vehicle {vid}: needs at least two samples")
        if (steps == 0).any():
            second = rows_sorted[1:][int(np.flatnonzero(steps == 0)[0])]
            raise DataError(
                f"vehicle {vid}: timestamp_s {second['timestamp_s'].strip()} appears more than "
                f"once (again on line {second[_LINE]}); each sample needs its own time"
            )

        def names(
            col: str,
            known: tuple[str, ...],
            rows: list[dict[str, str]] = rows_sorted,
            vid: str = vid,
        ) -> np.ndarray:
            values = [(r.get(col) or known[0]).strip().lower() or known[0] for r in rows]
            unknown = sorted(set(values) - set(known))
            if unknown:
                raise DataError(f"vehicle {vid}: {col} {unknown[0]!r} is not one of {known}")
            return np.array([known.index(v) for v in values], np.int64)

        logs.append(
            Telemetry(
                car=car,
                region=region,
                dt=float(np.median(steps)),
                speed=_column(rows_sorted, "speed_mps"),
                accel=_column(rows_sorted, "accel_mps2"),
                steering=_column(rows_sorted, "steering_deg"),
                brake=_column(rows_sorted, "brake"),
                headway=_column(rows_sorted, "headway_m", RADAR_RANGE_M),
                relative_speed=_column(rows_sorted, "relative_speed_mps"),
                road=names("road_type", ROADS),
                weather=names("weather", WEATHER),
            )
        )
    return logs
