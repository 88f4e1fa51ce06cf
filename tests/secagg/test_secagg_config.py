"""Parameters safe by construction: derivation, refusals with explanations, quantisation."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.errors import NonFiniteError, SecAggConfigError, SecAggIntegrityError
from fedge.secagg import SecAggConfig, SessionParams, dequantize_sum, derive_graph_parameters
from fedge.secagg.quantize import quantize


@pytest.mark.parametrize("n", [3, 10, 100, 500, 1000])
@pytest.mark.parametrize("dropout", [0.0, 0.1, 0.3])
def test_derived_graphs_are_safe(n, dropout):
    k, t, log2_fail = derive_graph_parameters(n, dropout, 0.05)
    assert k / 2 < t <= k <= n - 1
    assert k == n - 1 or k % 2 == 0
    SecAggConfig(dropout_rate=dropout).resolve(n, 10).check()
    if k < n - 1:  # sparser than complete only when the abandon target is met
        assert log2_fail <= -20


def test_sparse_graph_for_large_n_and_complete_for_small():
    assert derive_graph_parameters(1000, 0.1, 0.05)[0] < 100  # SecAgg+: O(log n) neighbours
    assert derive_graph_parameters(10, 0.3, 0.05)[0] == 9  # SecAgg: complete graph


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"neighbours": 8, "threshold": 4}, "k/2 < t"),
        ({"neighbours": 8, "threshold": 9}, "k/2 < t"),
        ({"bits": 8, "levels": 3}, "overflow"),
        ({"bits": 16, "levels": 1000}, "overflow"),
        ({"bits": 10}, "fewer than 2 quantisation levels"),
        ({"neighbours": 4, "threshold": 3, "corrupt_fraction": 0.4}, "unsafe"),
    ],
)
def test_unsafe_configs_refused_with_explanation(kwargs, match):
    with pytest.raises(SecAggConfigError, match=match):
        SecAggConfig(**kwargs).resolve(1000, 10)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"clip_range": (1.0, 1.0)},
        {"clip_range": (0.0, float("inf"))},
        {"bits": 65},
        {"dropout_rate": 0.5},
        {"corrupt_fraction": 0.6},
        {"neighbours": 4},
    ],
)
def test_invalid_config_values_refused(kwargs):
    with pytest.raises(SecAggConfigError):
        SecAggConfig(**kwargs)


def test_too_few_devices_refused():
    with pytest.raises(SecAggConfigError, match="at least 3"):
        SecAggConfig().resolve(2, 10)


def test_session_params_roundtrip_and_recheck():
    params = SecAggConfig().resolve(50, 7)
    assert SessionParams.from_dict(params.to_dict()) == params.__class__(
        **{**params.__dict__, "log2_failure": float("-inf")}
    )
    bad = {**params.to_dict(), "levels": 2**40}
    with pytest.raises(SecAggConfigError, match="overflow"):
        SessionParams.from_dict(bad)
    with pytest.raises(SecAggConfigError, match="malformed"):
        SessionParams.from_dict({**params.to_dict(), "n": "50"})


def test_stochastic_rounding_is_unbiased_and_bounded():
    params = SecAggConfig(clip_range=(-1.0, 1.0), levels=4).resolve(10, 20_000)
    x = np.full(20_000, 0.3, dtype=np.float32)
    q = quantize(x, params, bytes(32))
    values = params.clip_lo + q.astype(np.float64) * params.step
    assert np.abs(values - 0.3).max() <= params.step
    assert abs(values.mean() - 0.3) < 4 * params.step / np.sqrt(20_000)
    assert set(np.unique(q).tolist()) == {2, 3}  # 0.3 lies between grid points 0.0 and 0.5
    total = dequantize_sum(q.astype(np.uint64).sum(keepdims=True), 20_000, params)
    assert total[0] == pytest.approx(values.sum())


def test_quantize_refuses_bad_inputs():
    params = SecAggConfig(clip_inputs=False).resolve(10, 4)
    with pytest.raises(NonFiniteError):
        quantize(np.array([0, np.nan, 0, 0], np.float32), params, bytes(32))
    with pytest.raises(SecAggIntegrityError, match="outside the clip range"):
        quantize(np.array([0, 2.0, 0, 0], np.float32), params, bytes(32))
    clipped = SecAggConfig().resolve(10, 4)
    q = quantize(np.array([-5, 5, 0, 0], np.float32), clipped, bytes(32))
    assert q[0] == 0 and q[1] == clipped.levels
