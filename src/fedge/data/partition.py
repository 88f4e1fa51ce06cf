"""Split a labelled data set over virtual devices: IID, label skew, quantity skew, natural keys.

A :class:`Partition` is stored in CSR form (one index array plus offsets), so a partition over
10⁵ devices costs two integer arrays, not 10⁵ Python lists. Every partitioner is vectorised,
takes its randomness from an injected ``np.random.Generator`` and returns a true partition:
device index sets are disjoint and together cover every example.

- ``iid``: shuffle, then split as evenly as possible (sizes differ by at most one).
- ``dirichlet``: label skew. For every class, the share each device gets is drawn from
  Dir(alpha) over devices, as in Hsu, Qi & Brown 2019, "Measuring the Effects of Non-Identical
  Data Distribution for Federated Visual Classification", arXiv:1909.06335. Small ``alpha``
  (0.1) gives each device few classes; large ``alpha`` (100) is close to IID.
- ``shards``: the pathological non-IID split of McMahan et al. 2017, "Communication-Efficient
  Learning of Deep Networks from Decentralized Data", arXiv:1602.05629: sort by label, cut into
  ``num_devices * shards_per_device`` equal shards, give each device ``shards_per_device``.
- ``quantity``: quantity skew. Device sizes are proportional to LogNormal(0, sigma) draws (each
  device gets at least one example); labels stay IID.
- ``natural``: one device per distinct value of ``keys`` (writer, patient, phone id). Device d
  holds the d-th smallest key, i.e. the order of ``np.unique(keys)``. ``num_devices`` must be
  ``None`` (all keys) or exactly the number of distinct keys; to use fewer, filter the data first.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.errors import ConfigError, PartitionError
from fedge.registry import Registry

__all__ = ["PARTITIONERS", "Partition", "PartitionFn", "make_partition"]

IntArray = NDArray[np.int64]
_MAX_DIRICHLET_TRIES = 100


@dataclass(frozen=True)
class Partition:
    """Example indices per device in CSR layout: device d owns ``indices[offsets[d]:offsets[d+1]]``."""

    indices: IntArray
    offsets: IntArray

    def __post_init__(self) -> None:
        idx = np.asarray(self.indices, dtype=np.int64)
        off = np.asarray(self.offsets, dtype=np.int64)
        if idx.ndim != 1 or off.ndim != 1 or off.size < 1:
            raise PartitionError("indices and offsets must be 1-D; offsets needs at least [0]")
        if off[0] != 0 or off[-1] != idx.size or (np.diff(off) < 0).any():
            raise PartitionError(
                "offsets must start at 0, never decrease and end at len(indices) "
                f"(got first={off[0]}, last={off[-1]}, len(indices)={idx.size})"
            )
        object.__setattr__(self, "indices", idx)
        object.__setattr__(self, "offsets", off)

    @classmethod
    def from_lists(cls, parts: Sequence[np.ndarray]) -> Partition:
        """Build a partition from one index array per device."""
        sizes = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        flat = [np.asarray(p, dtype=np.int64).ravel() for p in parts]
        indices = np.concatenate(flat) if flat else np.zeros(0, dtype=np.int64)
        return cls(indices, offsets)

    @property
    def num_devices(self) -> int:
        """Number of devices."""
        return int(self.offsets.size - 1)

    @property
    def sizes(self) -> IntArray:
        """Number of examples on each device."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return self.num_devices

    def __getitem__(self, device: int) -> IntArray:
        d = int(device)
        if not -self.num_devices <= d < self.num_devices:
            raise IndexError(f"device {device} out of range for {self.num_devices} devices")
        d %= self.num_devices
        return self.indices[self.offsets[d] : self.offsets[d + 1]]


PartitionFn = Callable[..., Partition]
"""A partitioner: ``fn(labels, num_devices, rng, **options) -> Partition``; options keyword-only."""

PARTITIONERS: Registry[PartitionFn] = Registry("partitioner")


def _from_device_ids(device_of: IntArray, num_devices: int, tiebreak: np.ndarray) -> Partition:
    """Group example indices by their device id (``tiebreak`` orders examples within a device)."""
    order = np.lexsort((tiebreak, device_of)).astype(np.int64)
    sizes = np.bincount(device_of, minlength=num_devices)
    return Partition(order, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))


def _even_offsets(n: int, num_devices: int) -> IntArray:
    sizes = np.full(num_devices, n // num_devices, dtype=np.int64)
    sizes[: n % num_devices] += 1
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


@PARTITIONERS.register("iid")
def _iid(labels: np.ndarray, num_devices: int, rng: np.random.Generator) -> Partition:
    """Shuffle and split as evenly as possible."""
    return Partition(
        rng.permutation(labels.size).astype(np.int64), _even_offsets(labels.size, num_devices)
    )


@PARTITIONERS.register("dirichlet")
def _dirichlet(
    labels: np.ndarray,
    num_devices: int,
    rng: np.random.Generator,
    *,
    alpha: float = 0.5,
    min_size: int = 1,
) -> Partition:
    """Label skew: each class is spread over devices with proportions ~ Dir(alpha)."""
    alpha = _as_float("alpha", alpha)
    min_size = _as_int("min_size", min_size, minimum=0)
    if not alpha > 0 or not np.isfinite(alpha):
        raise PartitionError(f"dirichlet alpha must be a finite number > 0, got {alpha}")
    n = labels.size
    if min_size * num_devices > n:
        raise PartitionError(
            f"{num_devices} devices × min_size {min_size} needs {min_size * num_devices} "
            f"examples but there are {n}; use fewer devices or a smaller min_size"
        )
    _, classes = np.unique(labels, return_inverse=True)
    class_sizes = np.bincount(classes)
    for _ in range(_MAX_DIRICHLET_TRIES):
        props = rng.dirichlet(np.full(num_devices, alpha), size=class_sizes.size)
        props = np.nan_to_num(props, nan=0.0)
        props /= np.maximum(props.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
        counts = rng.multinomial(class_sizes, props)  # (classes, devices)
        if counts.sum(axis=0).min() >= min_size:
            break
    else:
        raise PartitionError(
            f"dirichlet(alpha={alpha}) could not give each of {num_devices} devices at least "
            f"{min_size} examples in {_MAX_DIRICHLET_TRIES} tries; use fewer devices, raise "
            "alpha or lower min_size"
        )
    # Examples grouped by class (random order within a class); hand out consecutive runs.
    by_class = np.lexsort((rng.random(n), classes))
    run_device = np.tile(np.arange(num_devices, dtype=np.int64), class_sizes.size)
    device_of = np.empty(n, dtype=np.int64)
    device_of[by_class] = np.repeat(run_device, counts.ravel())
    return _from_device_ids(device_of, num_devices, rng.random(n))


@PARTITIONERS.register("shards")
def _shards(
    labels: np.ndarray, num_devices: int, rng: np.random.Generator, *, shards_per_device: int = 2
) -> Partition:
    """Pathological non-IID: sorted-by-label shards, ``shards_per_device`` per device."""
    per = _as_int("shards_per_device", shards_per_device, minimum=1)
    n, num_shards = labels.size, num_devices * per
    if num_shards > n or n % num_shards:
        raise PartitionError(
            f"{n} examples cannot be cut into {num_devices} devices × {per} shards = "
            f"{num_shards} equal shards; pick num_devices * shards_per_device dividing {n} "
            "(or trim the data set)"
        )
    by_label = np.lexsort((rng.random(n), labels)).astype(np.int64)
    shards = by_label.reshape(num_shards, n // num_shards)[rng.permutation(num_shards)]
    return Partition(
        shards.ravel(), np.arange(num_devices + 1, dtype=np.int64) * (n // num_devices)
    )


@PARTITIONERS.register("quantity")
def _quantity(
    labels: np.ndarray, num_devices: int, rng: np.random.Generator, *, sigma: float = 1.0
) -> Partition:
    """Quantity skew: sizes ∝ LogNormal(0, sigma), at least one example each, labels IID."""
    sigma = _as_float("sigma", sigma)
    if not sigma >= 0 or not np.isfinite(sigma):
        raise PartitionError(f"quantity sigma must be a finite number >= 0, got {sigma}")
    n = labels.size
    log_w = sigma * rng.standard_normal(
        num_devices
    )  # LogNormal(0, sigma), scaled to avoid overflow
    weights = np.exp(log_w - log_w.max())
    exact = (n - num_devices) * weights / weights.sum()
    sizes = 1 + np.floor(exact).astype(np.int64)
    short = n - int(sizes.sum())  # largest-remainder rounding keeps the total exact
    sizes[np.argsort(np.floor(exact) - exact, kind="stable")[:short]] += 1
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return Partition(rng.permutation(n).astype(np.int64), offsets)


@PARTITIONERS.register("natural")
def _natural(
    labels: np.ndarray, num_devices: int | None, rng: np.random.Generator, *, keys: Any = None
) -> Partition:
    """One device per distinct key; device d holds the d-th key of ``np.unique(keys)``."""
    if keys is None:
        raise PartitionError("the 'natural' partitioner needs keys=<one key per example>")
    key_arr = np.asarray(keys)
    if key_arr.shape != labels.shape:
        raise PartitionError(
            f"keys must have one entry per example: {labels.size} labels but keys of shape "
            f"{key_arr.shape}"
        )
    _, device_of = np.unique(key_arr, return_inverse=True)
    num_keys = int(device_of.max()) + 1
    if num_devices is not None and num_devices != num_keys:
        raise PartitionError(
            f"'natural' makes one device per distinct key: there are {num_keys} keys but "
            f"num_devices={num_devices}; pass num_devices=None (or {num_keys}), or filter the "
            "data to the keys you want first"
        )
    return _from_device_ids(device_of.astype(np.int64), num_keys, np.arange(labels.size))


def _as_float(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PartitionError(f"{name} must be a number, got {value!r}") from None


def _as_int(name: str, value: Any, *, minimum: int) -> int:
    try:
        ok = not isinstance(value, bool) and float(value).is_integer() and value >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise PartitionError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def make_partition(
    name: str,
    labels: np.ndarray,
    num_devices: int | None,
    *,
    rng: np.random.Generator,
    keys: np.ndarray | None = None,
    **options: Any,
) -> Partition:
    """Partition ``labels`` over ``num_devices`` devices with the partitioner called ``name``."""
    fn = PARTITIONERS.get(name)
    valid = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    if keys is not None:
        options["keys"] = keys
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} for partitioner {name!r}; valid options: "
            f"{', '.join(valid) or '(none)'}"
        )
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.size == 0:
        raise PartitionError(f"labels must be a non-empty 1-D array, got shape {lab.shape}")
    if num_devices is None:
        if "keys" not in valid:
            raise PartitionError(f"partitioner {name!r} needs num_devices (an integer >= 1)")
    else:
        num_devices = _as_int("num_devices", num_devices, minimum=1)
        if num_devices > lab.size:
            raise PartitionError(
                f"{num_devices} devices but only {lab.size} examples: every device needs at "
                "least one; use fewer devices or more data"
            )
    return fn(lab, num_devices, rng, **options)
