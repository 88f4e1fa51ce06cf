"""What every use-case generator returns, and how it becomes a task's (train, test) pair.

A :class:`Fleet` is one row of features per window, with its label, the device that recorded it
(patient, machine, car: the key of the ``natural`` partition), the device's group (site, road
region) and how many bytes of raw sensor data each device holds. :func:`split_fleet` holds out
whole devices: the test set is data from devices the federation never trained on, which is what a
population model is for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedge.data.datasets import ArrayDataset
from fedge.errors import DataError

__all__ = ["Fleet", "split_fleet", "standardize"]


@dataclass(frozen=True)
class Fleet:
    """Feature windows of a fleet: ``x`` (float32), ``y`` (int64), ``device``/``group`` ids."""

    x: NDArray[np.float32]
    y: NDArray[np.int64]
    device: NDArray[np.int64]  # one id per window: the natural partition's key
    group: NDArray[np.int64]  # site / region of the window's device
    raw_bytes: NDArray[np.int64]  # raw sensor bytes behind each window (before features)
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.y)
        for name in ("x", "device", "group", "raw_bytes"):
            if len(getattr(self, name)) != n:
                raise DataError(f"Fleet.{name} has {len(getattr(self, name))} rows, y has {n}")
        if self.x.ndim != 2 or self.x.shape[1] != len(self.feature_names):
            raise DataError(
                f"x has shape {self.x.shape} but there are {len(self.feature_names)} feature names"
            )

    @property
    def num_devices(self) -> int:
        """Distinct devices in the fleet."""
        return len(np.unique(self.device))

    def raw_bytes_per_device(self) -> dict[int, int]:
        """Raw sensor bytes each device recorded."""
        ids, inverse = np.unique(self.device, return_inverse=True)
        totals = np.bincount(inverse, weights=self.raw_bytes.astype(np.float64))
        return {int(d): int(t) for d, t in zip(ids, totals, strict=True)}

    def dataset(self, rows: NDArray[np.bool_] | None = None) -> ArrayDataset:
        """The windows (all, or ``rows``) as an :class:`ArrayDataset` keyed by device."""
        if rows is None:
            return ArrayDataset(self.x, self.y, self.device)
        return ArrayDataset(self.x[rows], self.y[rows], self.device[rows])


def standardize(
    train: NDArray[np.float32], *others: NDArray[np.float32]
) -> list[NDArray[np.float32]]:
    """Scale every column to zero mean, unit variance using ``train``'s statistics.

    On a real fleet the two statistics come from one federated-analytics round (a secure sum of
    Σx and Σx² over devices); no window leaves a device for them.
    """
    mean = train.mean(axis=0, dtype=np.float64)
    std = train.std(axis=0, dtype=np.float64)
    std[std < 1e-8] = 1.0
    return [((a - mean) / std).astype(np.float32) for a in (train, *others)]


def split_fleet(
    fleet: Fleet, test_fraction: float, rng: np.random.Generator, *, by_group: bool = True
) -> tuple[ArrayDataset, ArrayDataset]:
    """Hold out whole devices for testing (stratified by group), then standardise the features.

    About ``test_fraction`` of the devices of each group go to the test set, so every site
    (or road region) is represented on both sides.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    devices, first = np.unique(fleet.device, return_index=True)
    groups = fleet.group[first] if by_group else np.zeros(len(devices), dtype=np.int64)
    held: list[int] = []
    for g in np.unique(groups):
        members = devices[groups == g]
        k = max(1, round(test_fraction * len(members))) if len(members) > 1 else 0
        held.extend(int(d) for d in rng.choice(members, size=k, replace=False))
    if not held or len(held) == len(devices):
        raise DataError(f"cannot hold out {test_fraction:.0%} of {len(devices)} devices")
    is_test = np.isin(fleet.device, np.asarray(held, dtype=np.int64))
    x_train, x_test = standardize(fleet.x[~is_test], fleet.x[is_test])
    return (
        ArrayDataset(x_train, fleet.y[~is_test], fleet.device[~is_test]),
        ArrayDataset(x_test, fleet.y[is_test], fleet.device[is_test]),
    )
