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

import math
import re
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


def _file_number(path: str | Path, number: int | None) -> int | None:
    if number is not None:
        return number
    match = re.match(r"(\d+)", Path(path).stem)
    return int(match.group(1)) if match else None


def _pick(
    keys: list[str], suffix: str, number: int | None, path: str | Path, *, strict: bool = False
) -> str | None:
    """The ``X<number><suffix>`` key; else (not ``strict``) the only such key; refuse ambiguity."""
    found: dict[str, int] = {}
    for key in keys:
        match = re.fullmatch(rf"X(\d+){suffix}", key)
        if match:
            found[key] = int(match.group(1))
    if not found:
        return None
    matching = [k for k, n in found.items() if n == number]
    if len(matching) == 1:
        return matching[0]
    if strict and not matching:
        return None
    if len(found) == 1:
        return next(iter(found))
    why = (
        f"none is the one of file number {number}"
        if number is not None
        else "the file name carries no number"
    )
    numbers = ", ".join(str(n) for n in sorted(set(found.values())))
    raise DataError(
        f"{path}: holds {len(found)} '*{suffix}' signals ({', '.join(sorted(found))}) and {why}; "
        f"choose the recording with number= (one of {numbers})"
    )


def read_cwru_mat(
    path: str | Path, *, number: int | None = None, rpm: float | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None, float]:
    """(drive-end signal, fan-end signal or None, rpm) of one CWRU .mat file.

    Some published files hold the signals of two recordings (e.g. ``X098_DE_time`` and
    ``X099_DE_time``): the one whose number matches the file's (its name, e.g. ``99.mat``, or
    ``number``) is read, and a file whose signals cannot be told apart is refused. ``rpm`` gives
    the motor speed for files without an ``X...RPM`` entry (and overrides the entry).
    """
    from scipy.io import loadmat

    if rpm is not None and not (math.isfinite(rpm) and rpm > 0):
        raise DataError(f"rpm must be a positive motor speed (e.g. 1797), got {rpm}")
    try:
        content = loadmat(str(path))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable MATLAB file ({exc})") from None
    keys = sorted(k for k in content if not k.startswith("__"))
    wanted = _file_number(path, number)
    de = _pick(keys, "_DE_time", wanted, path)
    if de is None:
        raise DataError(f"{path}: no 'X<number>_DE_time' drive-end signal; keys are {keys}")
    recording = int(de[1:].split("_", 1)[0])  # the chosen signal's number names its siblings
    # the fan-end signal and the speed must be the same recording's: never a sibling's
    fe = _pick(keys, "_FE_time", recording, path, strict=True)
    if rpm is None:
        rpm_key = _pick(keys, "RPM", recording, path, strict=True)
        if rpm_key is None:
            others = [k for k in keys if k.endswith("RPM")]
            raise DataError(
                f"{path}: no 'X<number>RPM' entry for recording {recording}"
                + (f" (only {', '.join(others)})" if others else "")
                + "; pass the motor speed, e.g. rpm=1797 (CWRU's table gives it for each file:"
                " 1797, 1772, 1750 or 1730 rpm by load)"
            )
        rpm = float(np.asarray(content[rpm_key]).ravel()[0])
    drive = np.asarray(content[de], np.float64).ravel()
    fan = np.asarray(content[fe], np.float64).ravel() if fe is not None else None
    return drive, fan, rpm


def cwru_windows(
    files: Mapping[str | Path, int],
    *,
    fs: float = 12_000.0,
    samples: int = 4_096,
    max_windows: int | None = None,
    rpm: float | Mapping[str | Path, float] | None = None,
) -> ArrayDataset:
    """Non-overlapping drive-end windows of every file → features; keys are file positions.

    ``files`` maps each .mat path to its class index in :data:`FAULTS`. The temperature, shaft
    speed and load columns of the generated fleet are filled with NaN-free stand-ins (CWRU logs
    no temperature): 0 °C, the file's shaft speed and 0 load. ``rpm`` gives the motor speed of
    files without an RPM entry: one value for all, or per path (see :func:`read_cwru_mat`).
    """
    xs, ys, keys = [], [], []
    for key, (path, label) in enumerate(files.items()):
        if not 0 <= label < len(FAULTS):
            raise DataError(f"{path}: label {label} is not a class of {FAULTS}")
        speed = rpm.get(path) if isinstance(rpm, Mapping) else rpm
        drive, _, file_rpm = read_cwru_mat(path, rpm=speed)
        count = len(drive) // samples
        if max_windows is not None:
            count = min(count, max_windows)
        if count == 0:
            raise DataError(f"{path}: shorter than one window of {samples} samples")
        windows = drive[: count * samples].reshape(count, samples)
        shaft = np.full(count, file_rpm / 60.0)
        features, _ = vibration_features(windows, fs, shaft)
        operating = np.column_stack([np.zeros(count), shaft, np.zeros(count)])
        xs.append(np.concatenate([features, operating.astype(np.float32)], axis=1))
        ys.append(np.full(count, label, np.int64))
        keys.append(np.full(count, key, np.int64))
    return ArrayDataset(np.concatenate(xs), np.concatenate(ys), np.concatenate(keys))
