"""Pure maths over ``Params`` trees (no I/O, no randomness).

Modelled on FedJAX's ``tree_util``: each function takes trees and returns a new tree. The global
L2 norm treats the whole tree as one vector, which is what clipping for privacy needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedge.core.params import Params
from fedge.errors import AggregationError, ShapeMismatchError

__all__ = [
    "tree_add",
    "tree_clip_by_global_norm",
    "tree_global_norm",
    "tree_is_finite",
    "tree_scale",
    "tree_sub",
    "tree_weighted_mean",
    "tree_zeros_like",
]

Tree = Mapping[str, np.ndarray]


def _check_same(a: Tree, b: Tree) -> None:
    if a.keys() != b.keys():
        raise ShapeMismatchError(f"trees differ in names: {sorted(a)} vs {sorted(b)}")
    for k in a:
        if a[k].shape != b[k].shape:
            raise ShapeMismatchError(f"{k}: shape {a[k].shape} vs {b[k].shape}")


def tree_zeros_like(a: Tree) -> Params:
    """A tree of float32 zeros shaped like ``a``."""
    return {k: np.zeros_like(v, dtype=np.float32) for k, v in a.items()}


def tree_add(a: Tree, b: Tree) -> Params:
    """Element-wise ``a + b``."""
    _check_same(a, b)
    return {k: np.add(a[k], b[k], dtype=np.float32) for k in a}


def tree_sub(a: Tree, b: Tree) -> Params:
    """Element-wise ``a - b``."""
    _check_same(a, b)
    return {k: np.subtract(a[k], b[k], dtype=np.float32) for k in a}


def tree_scale(a: Tree, factor: float) -> Params:
    """Every tensor multiplied by ``factor``."""
    f = np.float32(factor)
    return {k: (v * f).astype(np.float32, copy=False) for k, v in a.items()}


def tree_global_norm(a: Tree) -> float:
    """L2 norm of the whole tree seen as one vector (accumulated in float64)."""
    total = 0.0
    for v in a.values():
        flat = np.ravel(v).astype(np.float64, copy=False)
        total += float(np.dot(flat, flat))
    return float(np.sqrt(total))


def tree_clip_by_global_norm(a: Tree, max_norm: float) -> tuple[Params, float]:
    """Scale ``a`` so its global L2 norm is at most ``max_norm``; returns (tree, original norm)."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    norm = tree_global_norm(a)
    factor = 1.0 if norm <= max_norm else max_norm / norm
    return tree_scale(a, factor), norm


def tree_is_finite(a: Tree) -> bool:
    """True when no tensor holds NaN or Inf."""
    return all(bool(np.isfinite(v).all()) for v in a.values())


def tree_weighted_mean(trees: Sequence[Tree], weights: Sequence[float]) -> Params:
    """Σ wᵢ·treeᵢ / Σ wᵢ, accumulated in float64 for stability."""
    if len(trees) != len(weights):
        raise ValueError(f"{len(trees)} trees but {len(weights)} weights")
    if not trees:
        raise AggregationError("cannot average zero trees")
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise AggregationError(f"weights must be finite, non-negative and not all zero: {weights}")
    first = trees[0]
    for t in trees[1:]:
        _check_same(first, t)
    total = w.sum()
    out: Params = {}
    for k in first:
        acc = np.zeros(first[k].shape, dtype=np.float64)
        for t, wi in zip(trees, w, strict=True):
            acc += wi * t[k]
        out[k] = (acc / total).astype(np.float32)
    return out
