"""Loader for the Case Western Reserve University bearing data (.mat files, local only).

Each CWRU file (e.g. ``105.mat``) is a MATLAB file holding the drive-end and fan-end
accelerometer signals and the motor speed, under keys that carry the file number:
``X105_DE_time``, ``X105_FE_time`` (12 kHz or 48 kHz) and ``X105RPM``. The drive-end bearing is
an SKF 6205-2RS JEM, so its defect orders are those of
:data:`fedge.usecases.vibration.BEARINGS`\\[0]. Windows are cut from the drive-end signal and
turned into the same features as the generated fleet (:func:`vibration_features`), so a model
trained on one can be checked on the other.

Labels come from the caller (file → class), since CWRU's file numbering is only a table on the
data set's web page; :data:`CWRU_12K_DRIVE_END` lists that table for the 12 kHz drive-end
0.007–0.021-inch faults and the normal baseline.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedge.data.datasets import ArrayDataset
from fedge.errors import DataError
from fedge.usecases.maintenance import FAULTS
from fedge.usecases.vibration import vibration_features

__all__ = ["CWRU_12K_DRIVE_END", "cwru_windows", "read_cwru_mat"]

# File number → class index in FAULTS (0 healthy, 3 outer race @6:00, 4 inner race).
CWRU_12K_DRIVE_END: dict[int, int] = {
    **{n: 0 for n in (97, 98, 99, 100)},
    **{n: 4 for n in (105, 106, 107, 108, 169, 170, 171, 172, 209, 210, 211, 212)},
    **{n: 3 for n in (130, 131, 132, 133, 197, 198, 199, 200, 234, 235, 236, 237)},
}


def read_cwru_mat(
    path: str | Path,
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None, float]:
    """(drive-end signal, fan-end signal or None, rpm) of one CWRU .mat file."""
    from scipy.io import loadmat

    try:
        content = loadmat(str(path))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable MATLAB file ({exc})") from None
    keys = {k for k in content if not k.startswith("__")}
    de = sorted(k for k in keys if k.endswith("_DE_time"))
    if not de:
        raise DataError(f"{path}: no '*_DE_time' signal; keys are {sorted(keys)}")
    fe = sorted(k for k in keys if k.endswith("_FE_time"))
    rpm_keys = sorted(k for k in keys if k.endswith("RPM"))
    if not rpm_keys:
        raise DataError(f"{path}: no '*RPM' entry; pass the speed explicitly")
    rpm = float(np.asarray(content[rpm_keys[0]]).ravel()[0])
    drive = np.asarray(content[de[0]], np.float64).ravel()
    fan = np.asarray(content[fe[0]], np.float64).ravel() if fe else None
    return drive, fan, rpm


def cwru_windows(
    files: Mapping[str | Path, int],
    *,
    fs: float = 12_000.0,
    samples: int = 4_096,
    max_windows: int | None = None,
) -> ArrayDataset:
    """Non-overlapping drive-end windows of every file → features; keys are file positions.

    ``files`` maps each .mat path to its class index in :data:`FAULTS`. The temperature, shaft
    speed and load columns of the generated fleet are filled with NaN-free stand-ins (CWRU logs
    no temperature): 0 °C, the file's shaft speed and 0 load.
    """
    xs, ys, keys = [], [], []
    for key, (path, label) in enumerate(files.items()):
        if not 0 <= label < len(FAULTS):
            raise DataError(f"{path}: label {label} is not a class of {FAULTS}")
        drive, _, rpm = read_cwru_mat(path)
        count = len(drive) // samples
        if max_windows is not None:
            count = min(count, max_windows)
        if count == 0:
            raise DataError(f"{path}: shorter than one window of {samples} samples")
        windows = drive[: count * samples].reshape(count, samples)
        shaft = np.full(count, rpm / 60.0)
        features, _ = vibration_features(windows, fs, shaft)
        operating = np.column_stack([np.zeros(count), shaft, np.zeros(count)])
        xs.append(np.concatenate([features, operating.astype(np.float32)], axis=1))
        ys.append(np.full(count, label, np.int64))
        keys.append(np.full(count, key, np.int64))
    return ArrayDataset(np.concatenate(xs), np.concatenate(ys), np.concatenate(keys))
