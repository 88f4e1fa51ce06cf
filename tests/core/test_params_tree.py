"""Parameter trees: spec validation, flattening, torch adapters and tree maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedge.core.params import ParamSpec, from_module, load_into_module, to_torch
from fedge.core.tree import (
    tree_add,
    tree_clip_by_global_norm,
    tree_global_norm,
    tree_is_finite,
    tree_scale,
    tree_sub,
    tree_weighted_mean,
    tree_zeros_like,
)
from fedge.errors import AggregationError, NonFiniteError, ShapeMismatchError


def _tree(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "a": rng.standard_normal((3, 4)).astype(np.float32),
        "b": rng.standard_normal(2).astype(np.float32),
    }


def test_spec_flatten_unflatten_round_trip() -> None:
    t = _tree(0)
    spec = ParamSpec.of(t)
    assert spec.size == 14 and spec.nbytes == 56
    vec = spec.flatten(t)
    back = spec.unflatten(vec)
    for k in t:
        assert np.array_equal(back[k], t[k])
    with pytest.raises(ShapeMismatchError, match="vector of 14"):
        spec.unflatten(np.zeros(13, np.float32))


def test_spec_validate_names_dtype_shape_finite() -> None:
    spec = ParamSpec.of(_tree(0))
    with pytest.raises(ShapeMismatchError, match="missing"):
        spec.validate({"a": np.zeros((3, 4), np.float32)})
    with pytest.raises(ShapeMismatchError, match="dtype float32"):
        spec.validate({"a": np.zeros((3, 4)), "b": np.zeros(2, np.float32)})
    with pytest.raises(ShapeMismatchError, match="shape"):
        spec.validate({"a": np.zeros((4, 3), np.float32), "b": np.zeros(2, np.float32)})
    bad = spec.zeros()
    bad["b"][0] = np.nan
    with pytest.raises(NonFiniteError, match="b: contains NaN"):
        spec.validate(bad)


def test_torch_adapters_round_trip() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    params = from_module(model)
    assert all(v.dtype == np.float32 for v in params.values())
    new = {k: v + 1 for k, v in params.items()}
    load_into_module(model, new)
    assert all(np.array_equal(v, new[k]) for k, v in from_module(model).items())
    tensors = to_torch(new)
    assert all(torch.equal(tensors[k], torch.from_numpy(new[k])) for k in new)
    with pytest.raises(ShapeMismatchError):
        load_into_module(model, {"0.weight": np.zeros((1, 1), np.float32)})


def test_tree_maths_against_numpy() -> None:
    a, b = _tree(1), _tree(2)
    assert np.allclose(tree_add(a, b)["a"], a["a"] + b["a"])
    assert np.allclose(tree_sub(a, b)["b"], a["b"] - b["b"])
    assert np.allclose(tree_scale(a, 2.5)["a"], 2.5 * a["a"])
    flat = np.concatenate([a["a"].ravel(), a["b"]])
    assert tree_global_norm(a) == pytest.approx(float(np.linalg.norm(flat)), rel=1e-6)
    assert all(not v.any() for v in tree_zeros_like(a).values())
    mean = tree_weighted_mean([a, b], [1.0, 3.0])
    assert np.allclose(mean["a"], (a["a"] + 3 * b["a"]) / 4, atol=1e-6)


def test_clip_bounds_norm_and_keeps_small_trees() -> None:
    a = _tree(3)
    norm = tree_global_norm(a)
    clipped, original = tree_clip_by_global_norm(a, norm / 2)
    assert original == pytest.approx(norm)
    assert tree_global_norm(clipped) == pytest.approx(norm / 2, rel=1e-5)
    same, _ = tree_clip_by_global_norm(a, norm * 2)
    assert all(np.array_equal(same[k], a[k]) for k in a)
    with pytest.raises(ValueError, match="max_norm"):
        tree_clip_by_global_norm(a, 0.0)


def test_finite_and_mismatch_checks() -> None:
    a = _tree(4)
    assert tree_is_finite(a)
    a["b"][1] = np.inf
    assert not tree_is_finite(a)
    with pytest.raises(ShapeMismatchError):
        tree_add(_tree(0), {"a": np.zeros((3, 4), np.float32)})
    with pytest.raises(AggregationError):
        tree_weighted_mean([], [])
    with pytest.raises(AggregationError):
        tree_weighted_mean([_tree(0)], [0.0])


def test_flatten_stacked_equals_flattening_each_row() -> None:
    trees = [_tree(i) for i in range(3)]
    spec = ParamSpec.of(trees[0])
    stacked = {k: np.stack([t[k] for t in trees]) for k in spec.names}
    matrix = spec.flatten_stacked(stacked, 3)
    assert matrix.shape == (3, spec.size) and matrix.dtype == np.float32
    for row, tree in zip(matrix, trees, strict=True):
        np.testing.assert_array_equal(row, spec.flatten(tree))
    with pytest.raises(ShapeMismatchError, match="expected 14 parameters"):
        spec.flatten_stacked({"a": stacked["a"], "b": stacked["b"][:, :1]}, 3)
