"""Loader for the UCI HAR data set in its published layout (local files only).

Anguita et al. 2013, "A Public Domain Dataset for Human Activity Recognition Using Smartphones":
30 subjects, waist-worn phone, 50 Hz, 2.56 s windows (128 samples, 50 % overlap). The layout::

    UCI HAR Dataset/
      activity_labels.txt
      train/X_train.txt  y_train.txt  subject_train.txt
      train/Inertial Signals/body_acc_x_train.txt … total_acc_z_train.txt, body_gyro_*_train.txt
      test/…             (the same with _test)

``X_*.txt`` holds 561 engineered features per row (whitespace separated); ``y_*.txt`` activity
ids 1–6 (walking, upstairs, downstairs, sitting, standing, laying); ``subject_*.txt`` the subject
id (1–30), which is the natural device key. The inertial signals are 128 samples per row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedge.data.datasets import ArrayDataset
from fedge.errors import DataError
from fedge.usecases.wearables import wearable_features

__all__ = ["UCI_HAR_ACTIVITIES", "load_uci_har", "load_uci_har_inertial"]

UCI_HAR_ACTIVITIES = (
    "walking",
    "walking_upstairs",
    "walking_downstairs",
    "sitting",
    "standing",
    "laying",
)
_SIGNALS = (
    "total_acc_x",
    "total_acc_y",
    "total_acc_z",
    "body_gyro_x",
    "body_gyro_y",
    "body_gyro_z",
)


def _read(path: Path) -> NDArray[np.float64]:
    if not path.exists():
        raise DataError(f"{path} not found: point at the unpacked 'UCI HAR Dataset' folder")
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{path} is not whitespace-separated numbers: {exc}") from None
    return values


def _labels(root: Path, split: str) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    y = _read(root / split / f"y_{split}.txt").ravel().astype(np.int64) - 1
    subjects = _read(root / split / f"subject_{split}.txt").ravel().astype(np.int64)
    if y.min(initial=0) < 0 or y.max(initial=0) >= len(UCI_HAR_ACTIVITIES):
        raise DataError(f"{root / split}: activity ids must be 1..{len(UCI_HAR_ACTIVITIES)}")
    if len(y) != len(subjects):
        raise DataError(f"{root / split}: {len(y)} labels but {len(subjects)} subject ids")
    return y, subjects


def load_uci_har(root: str | Path, split: str = "train") -> ArrayDataset:
    """The 561 published features of ``split`` ("train"/"test"); keys are subject ids."""
    base = Path(root)
    x = _read(base / split / f"X_{split}.txt")
    y, subjects = _labels(base, split)
    if len(x) != len(y):
        raise DataError(f"{base / split}: {len(x)} feature rows but {len(y)} labels")
    return ArrayDataset(x.astype(np.float32), y, subjects)


def load_uci_har_inertial(root: str | Path, split: str = "train") -> ArrayDataset:
    """The raw inertial windows of ``split`` turned into fedge's wearable features.

    Uses total acceleration (g, gravity included) and body gyroscope (rad/s), so the same
    feature pipeline as the synthetic cohort applies (no heart rate in UCI HAR).
    """
    base = Path(root) / split / "Inertial Signals"
    channels = [_read(base / f"{name}_{split}.txt") for name in _SIGNALS]
    if len({c.shape for c in channels}) != 1:
        raise DataError(f"{base}: the inertial signal files have different shapes")
    acc = np.stack(channels[:3], axis=-1)
    gyro = np.stack(channels[3:], axis=-1)
    y, subjects = _labels(Path(root), split)
    if len(acc) != len(y):
        raise DataError(f"{base}: {len(acc)} windows but {len(y)} labels")
    features, _ = wearable_features(acc, gyro, None)
    return ArrayDataset(features, y, subjects)
