"""Partitioners: true partitions, determinism, measured skew, and every error path."""

from __future__ import annotations

import numpy as np
import pytest

import fedge.data
from fedge.data import PARTITIONERS, Partition, make_partition
from fedge.errors import ConfigError, PartitionError, UnknownNameError

LABELS = np.repeat(np.arange(10), 100)  # 1000 examples, 10 balanced classes
KEYS = np.arange(LABELS.size) % 37

CASES = [
    ("iid", 20, {}),
    ("dirichlet", 20, {"alpha": 0.5}),
    ("shards", 50, {"shards_per_device": 2}),
    ("quantity", 20, {"sigma": 1.0}),
    ("natural", 37, {"keys": KEYS}),
]


def _part(name: str, devices: int | None, seed: int = 0, **opts: object) -> Partition:
    return make_partition(name, LABELS, devices, rng=np.random.default_rng(seed), **opts)


def _label_hist(p: Partition) -> np.ndarray:
    """Per-device class histogram, shape (devices, classes)."""
    device_of = np.repeat(np.arange(p.num_devices), p.sizes)
    hist = np.zeros((p.num_devices, 10))
    np.add.at(hist, (device_of, LABELS[p.indices]), 1)
    return hist


def test_public_api() -> None:
    assert set(fedge.data.__all__) >= {"PARTITIONERS", "Partition", "make_partition"}
    assert PARTITIONERS.names() == ["dirichlet", "iid", "natural", "quantity", "shards"]


@pytest.mark.parametrize(("name", "devices", "opts"), CASES)
def test_is_a_true_partition(name: str, devices: int, opts: dict[str, object]) -> None:
    p = _part(name, devices, **opts)
    assert p.num_devices == len(p) == devices
    assert p.sizes.min() >= 1
    assert np.array_equal(np.sort(p.indices), np.arange(LABELS.size))  # disjoint and covering
    assert sum(len(p[d]) for d in range(devices)) == LABELS.size


@pytest.mark.parametrize(("name", "devices", "opts"), CASES)
def test_deterministic_given_seed(name: str, devices: int, opts: dict[str, object]) -> None:
    a, b = _part(name, devices, 7, **opts), _part(name, devices, 7, **opts)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.offsets, b.offsets)
    if name != "natural":
        assert not np.array_equal(a.indices, _part(name, devices, 8, **opts).indices)


def test_partition_container() -> None:
    p = Partition.from_lists([np.array([3, 1]), np.array([], dtype=np.int64), np.array([0, 2])])
    assert p.num_devices == 3 and list(p.sizes) == [2, 0, 2]
    assert list(p[0]) == [3, 1] and list(p[-1]) == [0, 2] and len(p[1]) == 0
    with pytest.raises(IndexError):
        p[3]
    with pytest.raises(PartitionError, match="offsets"):
        Partition(np.arange(3), np.array([0, 2]))


def test_iid_sizes_even() -> None:
    p = make_partition("iid", np.zeros(1003), 10, rng=np.random.default_rng(0))
    assert p.sizes.max() - p.sizes.min() <= 1


def test_shards_give_at_most_two_classes() -> None:
    classes = (_label_hist(_part("shards", 50)) > 0).sum(axis=1)
    assert classes.max() <= 2 and classes.mean() < 2.0 + 1e-9


def test_dirichlet_small_alpha_is_much_more_skewed() -> None:
    global_dist = np.full(10, 0.1)

    def mean_tv(alpha: float) -> float:
        hist = _label_hist(_part("dirichlet", 20, alpha=alpha))
        dist = hist / hist.sum(axis=1, keepdims=True)
        return float(0.5 * np.abs(dist - global_dist).sum(axis=1).mean())

    skewed, near_iid = mean_tv(0.1), mean_tv(100.0)
    assert skewed > 0.6 and near_iid < 0.2 and skewed > 4 * near_iid


def test_dirichlet_min_size_respected() -> None:
    assert _part("dirichlet", 20, alpha=0.3, min_size=10).sizes.min() >= 10


def test_quantity_skew_spreads_sizes_and_keeps_labels_iid() -> None:
    labels = np.repeat(np.arange(10), 1000)

    def cv(sigma: float) -> float:
        p = make_partition("quantity", labels, 50, rng=np.random.default_rng(1), sigma=sigma)
        assert p.sizes.sum() == labels.size and p.sizes.min() >= 1
        return float(p.sizes.std() / p.sizes.mean())

    assert cv(0.0) < 0.01 and cv(2.0) > 1.0
    big = make_partition("quantity", labels, 5, rng=np.random.default_rng(1), sigma=0.1)
    frac = np.bincount(labels[big[0]], minlength=10) / big.sizes[0]
    assert np.abs(frac - 0.1).max() < 0.05


def test_natural_one_device_per_key() -> None:
    keys = np.array(["b", "a", "b", "c", "a", "b"])
    p = make_partition("natural", np.zeros(6), None, rng=np.random.default_rng(0), keys=keys)
    assert [sorted(p[d].tolist()) for d in range(3)] == [[1, 4], [0, 2, 5], [3]]
    assert make_partition("natural", np.zeros(6), 3, rng=np.random.default_rng(0), keys=keys)


def test_scales_to_many_devices() -> None:
    labels = np.repeat(np.arange(10), 20_000)
    p = make_partition("quantity", labels, 100_000, rng=np.random.default_rng(0))
    assert p.num_devices == 100_000 and p.sizes.min() >= 1 and p.indices.size == labels.size


@pytest.mark.parametrize(
    ("name", "devices", "opts", "error", "match"),
    [
        ("iid", 0, {}, PartitionError, "num_devices"),
        ("iid", -3, {}, PartitionError, "num_devices"),
        ("iid", 1001, {}, PartitionError, "fewer devices"),
        ("iid", None, {}, PartitionError, "needs num_devices"),
        ("dirichlet", 10, {"alpha": 0.0}, PartitionError, "alpha"),
        ("dirichlet", 10, {"alpha": -1.0}, PartitionError, "alpha"),
        ("dirichlet", 200, {"alpha": 0.01, "min_size": 5}, PartitionError, "raise alpha"),
        ("dirichlet", 200, {"min_size": 6}, PartitionError, "min_size"),
        ("shards", 30, {}, PartitionError, "dividing"),
        ("shards", 10, {"shards_per_device": 0}, PartitionError, "shards_per_device"),
        ("shards", 10, {"shards_per_device": 1.5}, PartitionError, "shards_per_device"),
        ("quantity", 10, {"sigma": -1.0}, PartitionError, "sigma"),
        ("quantity", 10, {"sigma": "wide"}, PartitionError, "sigma must be a number"),
        ("natural", 5, {"keys": KEYS}, PartitionError, "num_devices=None"),
        ("natural", None, {}, PartitionError, "keys"),
        ("natural", None, {"keys": KEYS[:10]}, PartitionError, "one entry per example"),
        ("dirichlet", 10, {"alpah": 1.0}, ConfigError, "alpha, min_size"),
        ("iid", 10, {"keys": KEYS}, ConfigError, "valid options"),
        ("dirichet", 10, {}, UnknownNameError, "Did you mean 'dirichlet'"),
    ],
)
def test_errors(
    name: str,
    devices: int | None,
    opts: dict[str, object],
    error: type[Exception],
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        _part(name, devices, **opts)


def test_bad_labels() -> None:
    with pytest.raises(PartitionError, match="1-D"):
        make_partition("iid", np.zeros((4, 2)), 2, rng=np.random.default_rng(0))
