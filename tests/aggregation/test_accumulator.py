"""WeightedMeanAccumulator against the tree_weighted_mean reference, and its rejection rules."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.aggregation import Update, WeightedMeanAccumulator
from fedge.core.params import Params, ParamSpec
from fedge.core.tree import tree_weighted_mean
from fedge.errors import AggregationError, ShapeMismatchError

SPEC = ParamSpec(("w", "b", "s"), ((3, 4), (4,), ()))


def _tree(rng: np.random.Generator) -> Params:
    return {
        n: rng.standard_normal(s).astype(np.float32)
        for n, s in zip(SPEC.names, SPEC.shapes, strict=True)
    }


def _updates(k: int, seed: int = 0) -> list[Update]:
    rng = np.random.default_rng(seed)
    return [Update(f"d{i}", _tree(rng), int(rng.integers(1, 100))) for i in range(k)]


def _assert_close(a: Params, b: Params) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == np.float32
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7)


def _filled(updates: list[Update]) -> WeightedMeanAccumulator:
    acc = WeightedMeanAccumulator(SPEC)
    for u in updates:
        assert acc.add(u)
    return acc


def test_equals_reference_weighted_mean() -> None:
    ups = _updates(7)
    agg = _filled(ups).result()
    ref = tree_weighted_mean([u.delta for u in ups], [u.num_examples for u in ups])
    _assert_close(agg.mean_delta, ref)
    assert agg.num_accepted == 7 and agg.rejected == ()
    assert agg.total_weight == sum(u.num_examples for u in ups)


def test_add_stacked_equals_per_update_add() -> None:
    ups = _updates(6)
    stacked = {n: np.stack([u.delta[n] for u in ups]) for n in SPEC.names}
    weights = np.array([u.num_examples for u in ups], dtype=np.float64)
    acc = WeightedMeanAccumulator(SPEC)
    assert acc.add_stacked([u.device_id for u in ups], stacked, weights) == 6
    _assert_close(acc.result().mean_delta, _filled(ups).result().mean_delta)


def test_add_stacked_rejects_bad_rows_only() -> None:
    ups = _updates(5)
    stacked = {n: np.stack([u.delta[n] for u in ups]) for n in SPEC.names}
    stacked["w"][1, 0, 0] = np.nan
    stacked["b"][2, 3] = np.inf
    weights = np.array([3.0, 1.0, 1.0, 0.0, 2.0])
    ids = [u.device_id for u in ups]
    acc = WeightedMeanAccumulator(SPEC)
    assert acc.add_stacked(ids, stacked, weights) == 2
    reasons = dict(acc.rejected)
    assert set(reasons) == {"d1", "d2", "d3"}
    assert "NaN" in reasons["d1"] and "NaN or Inf" in reasons["d2"] and "weight" in reasons["d3"]
    ref = tree_weighted_mean([ups[0].delta, ups[4].delta], [3.0, 2.0])
    _assert_close(acc.result().mean_delta, ref)


def test_add_stacked_structural_problems() -> None:
    acc = WeightedMeanAccumulator(SPEC)
    good = {
        n: np.zeros((2, *s), dtype=np.float32) for n, s in zip(SPEC.names, SPEC.shapes, strict=True)
    }
    with pytest.raises(ShapeMismatchError):
        acc.add_stacked(["a", "b"], good, np.ones(3))
    as64 = {n: a.astype(np.float64) for n, a in good.items()}
    assert acc.add_stacked(["a", "b"], as64, np.ones(2)) == 0
    assert [d for d, _ in acc.rejected] == ["a", "b"] and "float32" in acc.rejected[0][1]


def _bad(delta: Params | None = None, n: int = 5, device: str = "bad") -> Update:
    base = _tree(np.random.default_rng(9))
    return Update(device, base if delta is None else delta, n)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda t: {**t, "w": np.full((3, 4), np.nan, np.float32)}, "NaN"),
        (lambda t: {**t, "b": np.array([0, np.inf, 0, 0], np.float32)}, "NaN or Inf"),
        (lambda t: {**t, "w": np.zeros((4, 3), np.float32)}, "shape"),
        (lambda t: {**t, "b": np.zeros(4, np.float64)}, "dtype"),
        (lambda t: {k: v for k, v in t.items() if k != "s"}, "missing"),
        (lambda t: {**t, "extra": np.zeros(1, np.float32)}, "unexpected"),
    ],
)
def test_bad_delta_rejected_and_never_averaged(make: object, reason: str) -> None:
    ups = _updates(3)
    acc = _filled(ups[:2])
    bad = _bad(make(_tree(np.random.default_rng(1))))  # type: ignore[operator]
    assert acc.add(bad) is False
    assert acc.add(ups[2])
    assert acc.rejected[0][0] == "bad" and reason in acc.rejected[0][1]
    ref = tree_weighted_mean([u.delta for u in ups], [u.num_examples for u in ups])
    _assert_close(acc.result().mean_delta, ref)
    assert acc.result().rejected == acc.rejected and acc.num_accepted == 3


@pytest.mark.parametrize("n", [0, -4, 2.5, True])
def test_bad_num_examples_rejected(n: object) -> None:
    acc = WeightedMeanAccumulator(SPEC)
    assert acc.add(_bad(n=n)) is False  # type: ignore[arg-type]
    assert "num_examples" in acc.rejected[0][1] and acc.total_weight == 0.0


def test_duplicate_device_rejected() -> None:
    ups = _updates(2)
    acc = _filled(ups)
    assert acc.add(ups[0]) is False and "duplicate" in acc.rejected[0][1]
    assert acc.num_accepted == 2


def test_result_without_accepted_updates_raises() -> None:
    acc = WeightedMeanAccumulator(SPEC)
    with pytest.raises(AggregationError, match="no update"):
        acc.result()
    acc.add(_bad(n=0))
    with pytest.raises(AggregationError, match="num_examples"):
        acc.result()


def test_merge_of_two_halves_equals_one_accumulator() -> None:
    ups = _updates(8)
    left, right = _filled(ups[:3]), _filled(ups[3:])
    right.add(_bad(n=0))
    left.merge(right)
    whole = _filled(ups).result()
    merged = left.result()
    _assert_close(merged.mean_delta, whole.mean_delta)
    assert merged.total_weight == whole.total_weight and merged.num_accepted == 8
    assert len(merged.rejected) == 1
    with pytest.raises(AggregationError, match="both partial"):
        left.merge(_filled(ups[:1]))


def test_weighted_sum_is_a_float64_copy() -> None:
    ups = _updates(2)
    acc = _filled(ups)
    ws = acc.weighted_sum
    assert ws["w"].dtype == np.float64
    expect = ups[0].num_examples * ups[0].delta["w"].astype(np.float64)
    expect += ups[1].num_examples * ups[1].delta["w"].astype(np.float64)
    np.testing.assert_allclose(ws["w"], expect, rtol=1e-12)
    ws["w"][:] = 0
    assert acc.weighted_sum["w"].any()


# -- add_partial: another tier's partial sums, exactly once per source -----------------------
def _partial(ups: list[Update]) -> tuple[dict[str, np.ndarray], float, int, list[str]]:
    acc = _filled(ups)
    return acc.weighted_sum, acc.total_weight, acc.num_accepted, [u.device_id for u in ups]


def test_add_partial_equals_adding_every_update() -> None:
    ups = _updates(9, seed=3)
    acc = WeightedMeanAccumulator(SPEC)
    assert acc.add_partial("gw-a", *_partial(ups[:4]))
    assert acc.add_partial("gw-b", *_partial(ups[4:]))
    _assert_close(acc.result().mean_delta, _filled(ups).result().mean_delta)
    assert acc.num_accepted == 9 and acc.total_weight == sum(u.num_examples for u in ups)


def test_add_partial_refuses_duplicates_and_bad_partials() -> None:
    ups = _updates(6, seed=4)
    sums, total, n, ids = _partial(ups[:3])
    acc = WeightedMeanAccumulator(SPEC)
    assert acc.add_partial("gw-a", sums, total, n, ids)
    before = acc.weighted_sum
    nan = {k: v.copy() for k, v in sums.items()}
    nan["w"][0, 0] = np.nan
    bad_shape = {**sums, "b": np.zeros(5)}
    cases = [
        ("gw-a", sums, total, n, ids, "duplicate"),  # retried partial: counted once
        ("gw-b", sums, total, n, ids, "already counted"),  # same devices via another source
        ("gw-c", nan, total, 1, ["x"], "NaN"),
        ("gw-d", bad_shape, total, 1, ["y"], "shape"),
        ("gw-e", {"w": sums["w"]}, total, 1, ["z"], "names"),
        ("gw-f", sums, float("inf"), 1, ["q"], "total_weight"),
        ("gw-g", sums, total, 2, ["q"], "num_accepted"),
        ("gw-h", {k: v.astype(np.int64) for k, v in sums.items()}, total, 1, ["r"], "float64"),
    ]
    for source, s, t, k, c, why in cases:
        assert not acc.add_partial(source, s, t, k, c)
        assert acc.rejected[-1][0] == source and why in acc.rejected[-1][1]
    for name, arr in acc.weighted_sum.items():
        np.testing.assert_array_equal(arr, before[name])
    assert acc.num_accepted == 3
