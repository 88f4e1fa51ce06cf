"""The wire format: exact round trips and clear refusals of bad payloads."""

from __future__ import annotations

import json
import pickle
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedge.core.params import ParamSpec
from fedge.core.serde import decode_arrays, decode_params, encode_arrays, encode_params
from fedge.errors import NonFiniteError, ShapeMismatchError, WireFormatError


def _params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "0.weight": rng.standard_normal((5, 3)).astype(np.float32),
        "0.bias": rng.standard_normal(5).astype(np.float32),
    }


def test_round_trip_is_exact_and_keeps_metadata() -> None:
    params = _params()
    blob = encode_params(params, {"round": "3"})
    out, meta = decode_params(blob, ParamSpec.of(params))
    assert list(out) == list(params)
    for k in params:
        assert out[k].dtype == np.float32
        assert np.array_equal(out[k], params[k])
    assert meta["round"] == "3"
    assert meta["fedge.version"] == "1"


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=6),
        elements=st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True),
    )
)
def test_round_trip_property(arr: np.ndarray) -> None:
    out, _ = decode_params(encode_params({"w": arr}))
    assert out["w"].shape == arr.shape
    assert np.array_equal(out["w"], arr)


def test_truncated_payload_refused_everywhere() -> None:
    blob = encode_params(_params())
    for cut in (0, 4, 8, 20, len(blob) // 2, len(blob) - 1):
        with pytest.raises(WireFormatError, match="truncated|not valid JSON|malformed"):
            decode_params(blob[:cut])


def test_padded_payload_refused() -> None:
    with pytest.raises(WireFormatError, match="truncated or padded"):
        decode_params(encode_params(_params()) + b"\x00" * 4)


def test_oversized_payload_refused_before_parsing() -> None:
    blob = encode_params(_params())
    with pytest.raises(WireFormatError, match="exceeds the limit"):
        decode_params(blob, max_bytes=len(blob) - 1)


def test_huge_header_length_refused() -> None:
    bogus = struct.pack("<Q", 2**40) + b"{}"
    with pytest.raises(WireFormatError, match="header of"):
        decode_params(bogus)


def test_wrong_shape_and_names_refused_with_names() -> None:
    params = _params()
    spec = ParamSpec.of(params)
    bad = dict(params, **{"0.bias": np.zeros(4, np.float32)})
    with pytest.raises(ShapeMismatchError, match=r"0\.bias: expected shape \(5,\)"):
        decode_params(encode_params(bad), spec)
    with pytest.raises(ShapeMismatchError, match="missing"):
        decode_params(encode_params({"0.weight": params["0.weight"]}), spec)


def test_wrong_dtype_refused() -> None:
    blob = encode_arrays({"w": np.zeros(3, np.float64)})
    with pytest.raises(WireFormatError, match="dtype F64 not allowed"):
        decode_params(blob)
    with pytest.raises(WireFormatError, match="must be float32"):
        encode_params({"w": np.zeros(3, np.int32)})


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_refused(value: float) -> None:
    arr = np.ones(4, np.float32)
    arr[2] = value
    with pytest.raises(NonFiniteError, match="w: contains NaN or Inf"):
        decode_params(encode_params({"w": arr}))
    out, _ = decode_params(encode_params({"w": arr}), finite=False)
    assert np.array_equal(out["w"], arr, equal_nan=True)


def test_pickle_payload_refused() -> None:
    with pytest.raises(WireFormatError):
        decode_params(pickle.dumps(_params()))


def test_foreign_safetensors_and_other_versions_refused() -> None:
    from safetensors.numpy import save

    with pytest.raises(WireFormatError, match="not a fedge tensor payload"):
        decode_params(save({"w": np.zeros(2, np.float32)}))
    blob = save(
        {"w": np.zeros(2, np.float32)},
        metadata={"fedge.format": "fedge-tensors", "fedge.version": "99"},
    )
    with pytest.raises(WireFormatError, match="version '99' is not supported"):
        decode_params(blob)


def test_header_offsets_that_disagree_are_refused() -> None:
    blob = encode_params({"w": np.zeros(4, np.float32)})
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    header["w"]["data_offsets"] = [0, 8]
    raw = json.dumps(header).encode()
    with pytest.raises(WireFormatError):
        decode_params(struct.pack("<Q", len(raw)) + raw + blob[8 + n :])


def test_integer_arrays_for_secure_aggregation() -> None:
    arr = np.arange(10, dtype=np.uint32)
    out, _ = decode_arrays(encode_arrays({"v": arr}), allowed_dtypes=frozenset({"U32"}))
    assert out["v"].dtype == np.uint32
    assert np.array_equal(out["v"], arr)


def test_not_bytes_refused() -> None:
    with pytest.raises(WireFormatError, match="expected bytes"):
        decode_params("hello")  # type: ignore[arg-type]
