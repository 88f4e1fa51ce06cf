"""Strategies and server optimizers against hand-written references of their papers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fedge.aggregation as agg
from fedge.aggregation import (
    STRATEGIES,
    Aggregate,
    ClientPlan,
    ServerState,
    Strategy,
    Update,
    make_strategy,
    strategy_options,
)
from fedge.core.params import Params
from fedge.errors import AggregationError, ConfigError, ShapeMismatchError, UnknownNameError

SHAPES = {"w": (2, 3), "b": (3,)}


def _tree(seed: int, scale: float = 1.0) -> Params:
    rng = np.random.default_rng(seed)
    return {k: (scale * rng.standard_normal(s)).astype(np.float32) for k, s in SHAPES.items()}


def _agg(delta: Params) -> Aggregate:
    return Aggregate(delta, 1.0, 1, ())


def test_public_api_and_registry() -> None:
    assert sorted(agg.__all__) == sorted(set(agg.__all__))
    assert all(hasattr(agg, name) for name in agg.__all__)
    assert STRATEGIES.names() == sorted(
        ["fedadagrad", "fedadam", "fedavg", "fedavgm", "fedprox", "fedsgd", "fedyogi"]
    )
    for name in STRATEGIES.names():
        assert make_strategy(name).name == name


def test_fedavg_lr1_on_one_update_returns_local_params() -> None:
    strategy = make_strategy("fedavg")
    state = strategy.init(_tree(0))
    local = _tree(1)
    delta = {k: local[k] - state.params[k] for k in local}
    new, aggregate = strategy.apply(state, [Update("dev", delta, 10)])
    for k in local:
        np.testing.assert_allclose(new.params[k], local[k], rtol=1e-6, atol=1e-6)
    assert new.round == 1 and aggregate.num_accepted == 1 and new.opt_state == {}


def test_fedavg_weights_by_examples_and_reports_rejections() -> None:
    strategy = make_strategy("fedavg", server_lr=0.5)
    state = strategy.init(_tree(0))
    d1, d2 = _tree(1), _tree(2)
    bad = {**_tree(3), "w": np.full((2, 3), np.nan, np.float32)}
    ups = [Update("a", d1, 1), Update("b", d2, 3), Update("c", bad, 100)]
    new, aggregate = strategy.apply(state, ups)
    for k in d1:
        expect = state.params[k] + 0.5 * (d1[k] + 3 * d2[k]) / 4
        np.testing.assert_allclose(new.params[k], expect, rtol=1e-5, atol=1e-6)
    assert [d for d, _ in aggregate.rejected] == ["c"] and aggregate.total_weight == 4.0


def test_apply_with_no_valid_update_raises() -> None:
    strategy = make_strategy("fedavg")
    with pytest.raises(AggregationError):
        strategy.apply(strategy.init(_tree(0)), [])


def test_fedavgm_momentum_accumulates() -> None:
    strategy = make_strategy("fedavgm", server_lr=1.0, momentum=0.9)
    state = strategy.init(_tree(0))
    delta = _tree(1)
    s1 = strategy.step(state, _agg(delta))
    s2 = strategy.step(s1, _agg(delta))
    for k in delta:  # u1 = Δ, u2 = 0.9Δ + Δ  ⇒  x2 = x0 + 2.9Δ
        np.testing.assert_allclose(s1.opt_state["momentum"][k], delta[k], rtol=1e-6)
        np.testing.assert_allclose(
            s2.params[k], state.params[k] + 2.9 * delta[k], rtol=1e-5, atol=1e-6
        )


def _reference_algorithm2(
    variant: str, x: Params, deltas: list[Params], *, lr: float, b1: float, b2: float, tau: float
) -> Params:
    """Reddi et al. 2021, Algorithm 2 (server lines), written out plainly in float64."""
    x = {k: v.astype(np.float64) for k, v in x.items()}
    m = {k: np.zeros_like(v) for k, v in x.items()}
    v = {k: np.full_like(a, tau**2) for k, a in x.items()}
    for delta in deltas:
        for k in x:
            d = delta[k].astype(np.float64)
            m[k] = b1 * m[k] + (1 - b1) * d
            if variant == "fedadagrad":
                v[k] = v[k] + d * d
            elif variant == "fedyogi":
                v[k] = v[k] - (1 - b2) * d * d * np.sign(v[k] - d * d)
            else:
                v[k] = b2 * v[k] + (1 - b2) * d * d
            x[k] = x[k] + lr * m[k] / (np.sqrt(v[k]) + tau)
    return x


@pytest.mark.parametrize("variant", ["fedadam", "fedyogi", "fedadagrad"])
def test_adaptive_matches_reference_for_three_steps(variant: str) -> None:
    opts = {"server_lr": 0.05, "beta1": 0.8, "tau": 0.01}
    if variant != "fedadagrad":
        opts["beta2"] = 0.95
    strategy = make_strategy(variant, **opts)
    x0 = _tree(0)
    deltas = [_tree(10 + i, scale=0.1) for i in range(3)]
    state = strategy.init(x0)
    for delta in deltas:
        state = strategy.step(state, _agg(delta))
    ref = _reference_algorithm2(
        variant, x0, deltas, lr=0.05, b1=0.8, b2=opts.get("beta2", 0.0), tau=0.01
    )
    assert state.round == 3
    for k in x0:
        np.testing.assert_allclose(state.params[k], ref[k], rtol=1e-5, atol=1e-6)


def test_paper_defaults() -> None:
    assert strategy_options("fedadam") == {
        "server_lr": 1e-2, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3
    }  # fmt: skip
    assert strategy_options("fedavg") == {"server_lr": 1.0}
    assert strategy_options("fedavgm") == {"server_lr": 1.0, "momentum": 0.9}
    assert strategy_options("fedprox") == {"server_lr": 1.0, "proximal_mu": 0.01}
    assert "beta2" not in strategy_options("fedadagrad")


@pytest.mark.parametrize("name", ["fedadam", "fedavgm", "fedavg"])
def test_state_is_never_modified(name: str) -> None:
    strategy = make_strategy(name)
    x0 = _tree(0)
    x0_copy = {k: v.copy() for k, v in x0.items()}
    state = strategy.init(x0)
    snapshot = {k: v.copy() for k, v in state.params.items()}
    opt_snapshot = {s: {k: a.copy() for k, a in t.items()} for s, t in state.opt_state.items()}
    delta = _tree(1)
    new = strategy.step(state, _agg(delta))
    strategy.step(new, _agg(delta))
    for k, before in snapshot.items():
        assert np.array_equal(state.params[k], before) and new.params[k] is not state.params[k]
        assert np.array_equal(x0[k], x0_copy[k]) and state.params[k] is not x0[k]
    for slot, tree in opt_snapshot.items():
        for k, a in tree.items():
            assert np.array_equal(state.opt_state[slot][k], a)
    assert state.round == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.round = 5  # type: ignore[misc]


def test_client_plans() -> None:
    state = make_strategy("fedavg").init(_tree(0))
    assert make_strategy("fedavg").client_plan(state) == ClientPlan()
    assert make_strategy("fedprox", proximal_mu=0.1).client_plan(state).proximal_mu == 0.1
    assert make_strategy("fedsgd").client_plan(state).single_full_batch_step


def test_step_validates_the_aggregate() -> None:
    strategy = make_strategy("fedadam")
    state = strategy.init(_tree(0))
    with pytest.raises(ShapeMismatchError):
        strategy.step(state, _agg({"w": np.zeros((2, 3), np.float32)}))
    foreign = ServerState(state.params, 0, {})
    with pytest.raises(ShapeMismatchError, match="different strategy"):
        strategy.step(foreign, _agg(_tree(1)))


@pytest.mark.parametrize(
    ("name", "opts", "error", "match"),
    [
        ("fedavgg", {}, UnknownNameError, "Did you mean 'fedavg'"),
        ("fedadam", {"beta_2": 0.9}, ConfigError, "Did you mean 'beta2'"),
        ("fedavg", {"momentum": 0.9}, ConfigError, "valid options: server_lr"),
        ("fedavg", {"server_lr": 0.0}, ConfigError, "server_lr"),
        ("fedavgm", {"momentum": 1.0}, ConfigError, "momentum"),
        ("fedyogi", {"beta2": 1.5}, ConfigError, "beta2"),
        ("fedadam", {"tau": -1.0}, ConfigError, "tau"),
        ("fedprox", {"proximal_mu": -0.1}, ConfigError, "proximal_mu"),
        ("fedavg", {"server_lr": "fast"}, ConfigError, "number"),
    ],
)
def test_make_strategy_errors(
    name: str, opts: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        make_strategy(name, **opts)  # type: ignore[arg-type]


def test_strategy_is_an_abc() -> None:
    with pytest.raises(TypeError):
        Strategy()  # type: ignore[abstract]
