"""Small fixtures in the public data sets' published formats, written by hand for the tests.

Used by test_loaders.py (the loaders read them) and test_local_data.py (``fedge simulate``
trains on them through a ``[data]`` section).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fedge.usecases.vibration import BEARINGS, vibration_window


def write_uci_har(
    root: Path, split: str, rows: int, rng: np.random.Generator, subjects: Sequence[int] = (1, 2, 3)
) -> None:
    """``root/split`` as in the unpacked 'UCI HAR Dataset': features, labels, subjects, signals."""
    d = root / split
    (d / "Inertial Signals").mkdir(parents=True)
    np.savetxt(d / f"X_{split}.txt", rng.uniform(-1, 1, (rows, 561)), fmt="%.7e")
    np.savetxt(d / f"y_{split}.txt", rng.integers(1, 7, rows), fmt="%d")
    np.savetxt(d / f"subject_{split}.txt", rng.choice(np.asarray(subjects), rows), fmt="%d")
    for kind in ("body_acc", "body_gyro", "total_acc"):
        for axis in "xyz":
            values = rng.normal(
                1.0 if (kind, axis) == ("total_acc", "x") else 0.0, 0.1, (rows, 128)
            )
            np.savetxt(d / "Inertial Signals" / f"{kind}_{axis}_{split}.txt", values, fmt="%.7e")


def write_cwru(
    folder: Path, files: Mapping[int, str], rng: np.random.Generator, samples: int = 12_000
) -> dict[Path, int]:
    """One ``<number>.mat`` per entry (``X<number>_DE_time``, ``_FE_time``, ``RPM``) whose
    drive-end signal has the given fault ("healthy", "outer", "inner"); path → class index."""
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for number, fault in files.items():
        drive = vibration_window(
            rng, fs=12_000.0, samples=samples, shaft_hz=1797 / 60, load=0.5, bearing=BEARINGS[0],
            resonance_hz=3_500.0, damping=0.05, residual_imbalance=0.1, base_2x=0.05,
            vane_order=6, noise=0.05, gain=1.0, fault=fault, severity=1.0,
        )  # fmt: skip
        path = folder / f"{number}.mat"
        savemat(
            path,
            {
                f"X{number:03d}_DE_time": drive[:, None],
                f"X{number:03d}_FE_time": 0.5 * drive[:, None],
                f"X{number:03d}RPM": np.array([[1797.0]]),
            },
        )
        out[path] = {"healthy": 0, "outer": 3, "inner": 4}[fault]
    return out


def write_cmapss(path: Path, lives: Mapping[int, int], rng: np.random.Generator) -> None:
    """``train_FD00x.txt``: one row per engine cycle, 26 whitespace-separated columns; the
    sensors drift as the engine nears its last cycle."""
    rows = []
    for unit, life in lives.items():
        for cycle in range(1, life + 1):
            wear = cycle / life
            sensors = 500 + 20 * wear**3 + rng.normal(0, 0.5, 21)
            rows.append([unit, cycle, 0.0, 0.0, 100.0, *sensors])
    np.savetxt(path, np.array(rows), fmt="%.4f")


def telemetry_rows(vehicle: str, n: int, brake_at: int | None) -> list[dict[str, str]]:
    """A car's log as a telematics export would hold it: 10 Hz, one row per sample."""
    rows = []
    for k in range(n):
        rows.append(
            {
                "vehicle_id": vehicle,
                "timestamp_s": f"{1_700_000_000 + k / 10:.1f}",  # epoch seconds, not from 0
                "speed_mps": f"{15.0 + 0.05 * k:.2f}",
                "accel_mps2": "-5.20" if k == brake_at else "0.50",
                "steering_deg": f"{(-1) ** k * 2.0:.1f}",
                "brake": "0.66" if k == brake_at else "0",
                "headway_m": "" if k % 10 == 0 else f"{40.0 - 0.1 * k:.1f}",  # empty: no target
                "relative_speed_mps": "-1.0",
                "road_type": "Highway",
                "weather": "rain",
            }
        )
    return rows


TELEMETRY_COLUMNS = [
    "vehicle_id", "timestamp_s", "speed_mps", "accel_mps2", "steering_deg", "brake",
    "headway_m", "relative_speed_mps", "road_type", "weather",
]  # fmt: skip


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, str]]) -> None:
    """A plain CSV: the header, then one line per row (no quoting needed here)."""
    lines = [",".join(columns)] + [",".join(r[c] for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
