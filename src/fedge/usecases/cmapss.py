"""Loader for NASA C-MAPSS turbofan run-to-failure data (``train_FD00x.txt``, local only).

Saxena et al. 2008, "Damage propagation modeling for aircraft engine run-to-failure simulation".
Each row is one engine cycle, 26 whitespace-separated columns: unit number, cycle, three
operational settings, 21 sensor readings. Every training unit runs until failure, so the
remaining useful life at cycle c is (last cycle of the unit − c). The early-warning label is
RUL ≤ ``horizon`` cycles — the same question as the generated fleet's ``maintenance_warning``;
the engine (unit) is the natural device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedge.data.datasets import ArrayDataset
from fedge.errors import DataError

__all__ = ["CMAPSS_COLUMNS", "load_cmapss"]

CMAPSS_COLUMNS = (
    "unit",
    "cycle",
    "setting_1",
    "setting_2",
    "setting_3",
    *(f"sensor_{i}" for i in range(1, 22)),
)


def load_cmapss(path: str | Path, *, horizon: int = 30) -> ArrayDataset:
    """Rows of a C-MAPSS training file: x = settings + sensors, y = RUL ≤ horizon, key = unit."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p} not found: point at a train_FD00x.txt file")
    try:
        table = np.loadtxt(p, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{p}: not whitespace-separated numbers ({exc})") from None
    if table.shape[1] != len(CMAPSS_COLUMNS):
        raise DataError(f"{p}: {table.shape[1]} columns, expected {len(CMAPSS_COLUMNS)}")
    unit = table[:, 0].astype(np.int64)
    cycle = table[:, 1]
    last = np.zeros(unit.max() + 1)
    np.maximum.at(last, unit, cycle)
    rul = last[unit] - cycle
    return ArrayDataset(table[:, 2:].astype(np.float32), (rul <= horizon).astype(np.int64), unit)
