"""Cohort: every bad payload is refused before it touches the sum; the partial is Σ n·Δ."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from tests.gateway.conftest import make_update_payload

from fedge.core.params import ParamSpec
from fedge.core.serde import decode_arrays, encode_arrays, encode_params
from fedge.errors import NonFiniteError, ShapeMismatchError, ValidationError, WireFormatError
from fedge.gateway.cohort import Cohort, decode_update, encode_partial
from fedge.transport.messages import PARTIAL_KEYS, new_nonce


def _decode(payload: bytes, spec: ParamSpec, device: str = "d1"):  # type: ignore[no-untyped-def]
    return decode_update(payload, spec, job_id="job1", round_number=1, device=device)


def test_partial_is_the_weighted_sum_of_accepted_updates(spec: ParamSpec) -> None:
    cohort = Cohort(spec)
    expected = {
        n: np.zeros(s, dtype=np.float64) for n, s in zip(spec.names, spec.shapes, strict=True)
    }
    for i, n in enumerate((3, 7, 11)):
        payload, delta = make_update_payload(spec, f"d{i}", num_examples=n, seed=i)
        assert cohort.add(_decode(payload, spec, f"d{i}"))
        for name in spec.names:
            expected[name] += n * delta[name].astype(np.float64)
    nonce = new_nonce()
    partial = encode_partial(
        cohort, job_id="job1", round_number=1, gateway="gw-a", site="site-a", nonce=nonce
    )
    arrays, meta = decode_arrays(partial, allowed_dtypes=frozenset({"F32"}))
    assert set(PARTIAL_KEYS) <= set(meta)
    assert meta["kind"] == "partial" and meta["nonce"] == nonce and meta["site"] == "site-a"
    assert float(meta["total_weight"]) == 21.0 and meta["num_accepted"] == "3"
    assert json.loads(meta["contributors"]) == ["d0", "d1", "d2"]
    for name in spec.names:  # float32 on the wire: within one rounding of the float64 sum
        assert arrays[name].dtype == np.float32
        np.testing.assert_array_equal(arrays[name], expected[name].astype(np.float32))


def _bad_payloads(spec: ParamSpec) -> dict[str, tuple[bytes, type[Exception]]]:
    good, delta = make_update_payload(spec, "d1")
    meta = {
        "kind": "update", "job": "job1", "round": "1", "device": "d1",
        "nonce": new_nonce(), "num_examples": "5", "train_loss": "0.5",
    }  # fmt: skip
    nan = {k: v.copy() for k, v in delta.items()}
    nan[spec.names[0]].flat[0] = np.nan
    inf = {k: v.copy() for k, v in delta.items()}
    inf[spec.names[-1]].flat[-1] = np.inf
    wrong_shape = dict(delta)
    wrong_shape[spec.names[0]] = np.zeros((3, 3), dtype=np.float32)
    missing = {k: v for k, v in delta.items() if k != spec.names[0]}
    as_f64 = {k: v.astype(np.float64) for k, v in delta.items()}
    big = dict(delta)
    big["extra"] = np.zeros(spec.size + 32 * 1024, dtype=np.float32)  # > model + header
    header_len = struct.unpack("<Q", good[:8])[0]
    return {
        "nan": (encode_params(nan, meta), NonFiniteError),
        "inf": (encode_params(inf, meta), NonFiniteError),
        "wrong shape": (encode_params(wrong_shape, meta), ShapeMismatchError),
        "missing tensor": (encode_params(missing, meta), ShapeMismatchError),
        "wrong dtype": (encode_arrays(as_f64, meta), WireFormatError),
        "truncated": (good[: len(good) - 17], WireFormatError),
        "truncated header": (good[: 8 + header_len // 2], WireFormatError),
        "oversized": (encode_params(big, meta), WireFormatError),
        "pickle": (b"\x80\x04\x95" + b"\x00" * 64, WireFormatError),
        "other device": (make_update_payload(spec, "d2")[0], ValidationError),
        "other round": (make_update_payload(spec, "d1", rnd=2)[0], ValidationError),
        "no examples": (make_update_payload(spec, "d1", num_examples=0)[0], ValidationError),
        "no binding": (encode_params(delta, {"kind": "update"}), WireFormatError),
    }


@pytest.mark.parametrize(
    "case",
    [
        "nan", "inf", "wrong shape", "missing tensor", "wrong dtype", "truncated",
        "truncated header", "oversized", "pickle", "other device", "other round", "no examples",
        "no binding",
    ],
)  # fmt: skip
def test_bad_payload_refused_before_the_sum(spec: ParamSpec, case: str) -> None:
    payload, error = _bad_payloads(spec)[case]
    with pytest.raises(error):
        _decode(payload, spec)


def test_refusals_leave_the_partial_unchanged(spec: ParamSpec) -> None:
    cohort = Cohort(spec)
    good, _ = make_update_payload(spec, "d0", num_examples=4)
    assert cohort.add(_decode(good, spec, "d0"))
    before = cohort.weighted_sum()
    cohort.reject("d1", "contains NaN")
    again, _ = make_update_payload(spec, "d0", num_examples=9, seed=5)
    assert not cohort.add(_decode(again, spec, "d0"))  # a second update from the same device
    after = cohort.weighted_sum()
    for name in spec.names:
        np.testing.assert_array_equal(before[name], after[name])
    assert cohort.total_weight == 4.0
    assert {d for d, _ in cohort.rejected()} == {"d0", "d1"}


def test_under_dp_every_update_weighs_one(spec: ParamSpec) -> None:
    from fedge.aggregation.base import Update
    from fedge.gateway.cohort import DecodedUpdate

    rng = np.random.default_rng(0)
    deltas = [
        {
            n: rng.standard_normal(s).astype(np.float32)
            for n, s in zip(spec.names, spec.shapes, strict=True)
        }
        for _ in range(2)
    ]
    plain, private = Cohort(spec), Cohort(spec, uniform=True)
    for i, (delta, n) in enumerate(zip(deltas, (10, 30), strict=True)):
        decoded = DecodedUpdate(Update(f"dev-{i}", delta, n), new_nonce(), 0.1)
        assert plain.add(decoded) and private.add(decoded)
    assert plain.total_weight == 40 and private.total_weight == 2
    name = spec.names[0]
    np.testing.assert_allclose(
        private.weighted_sum()[name], deltas[0][name] + deltas[1][name], atol=1e-5
    )
    np.testing.assert_allclose(
        plain.weighted_sum()[name], 10 * deltas[0][name] + 30 * deltas[1][name], atol=1e-4
    )


def test_a_device_refused_then_accepted_is_not_listed_as_rejected(spec: ParamSpec) -> None:
    cohort = Cohort(spec)
    cohort.reject("d0", "truncated payload")
    cohort.reject("d1", "contains NaN")
    good, _ = make_update_payload(spec, "d0", num_examples=4)
    assert cohort.add(_decode(good, spec, "d0"))  # d0's retry is fine
    assert cohort.contributors() == ["d0"]
    assert cohort.rejected() == (("d1", "contains NaN"),)
    partial = encode_partial(
        cohort, job_id="job1", round_number=1, gateway="gw-a", site="site-a", nonce=new_nonce()
    )
    _, meta = decode_arrays(partial, allowed_dtypes=frozenset({"F32", "F64"}))
    assert json.loads(meta["rejected"]) == [["d1", "contains NaN"]]
