"""The gateway's half of federated evaluation: check each device's sums, add up the accepted
ones, forward only the totals in the partial; none under differential privacy."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.aggregation.evaluation import EvaluationSums, eval_meta, parse_eval_meta
from fedge.core.params import ParamSpec
from fedge.core.serde import decode_arrays, encode_params
from fedge.errors import NonFiniteError, ValidationError
from fedge.gateway.cohort import Cohort, decode_update, encode_partial
from fedge.transport.messages import new_nonce

SPEC = ParamSpec.of({"w": np.zeros((4, 3), np.float32), "b": np.zeros(3, np.float32)})


def payload(device: str, evaluation: dict[str, str], num_examples: int = 10) -> bytes:
    rng = np.random.default_rng(len(device))
    delta = {
        n: rng.normal(size=s).astype(np.float32)
        for n, s in zip(SPEC.names, SPEC.shapes, strict=True)
    }
    meta = {
        "kind": "update",
        "job": "job1",
        "round": "1",
        "device": device,
        "nonce": new_nonce(),
        "num_examples": str(num_examples),
        "train_loss": "0.5",
        **evaluation,
    }
    return encode_params(delta, meta)


def decode(data: bytes, device: str):  # type: ignore[no-untyped-def]
    return decode_update(data, SPEC, job_id="job1", round_number=1, device=device)


def test_the_partial_carries_the_sum_of_the_accepted_devices_evaluations() -> None:
    cohort = Cohort(SPEC)
    reports = {
        "d1": EvaluationSums(10, 7.0, 4.5, 1),
        "d2": EvaluationSums(30, 12.0, 20.0, 1),
        "d3": None,  # an older device: no evaluation, still a contributor
    }
    for device, sums in reports.items():
        assert cohort.add(decode(payload(device, eval_meta(sums)), device))
    assert not cohort.add(decode(payload("d1", eval_meta(reports["d1"])), "d1"))  # twice: no
    assert cohort.evaluation == EvaluationSums(40, 19.0, 24.5, 2)
    data = encode_partial(cohort, job_id="job1", round_number=1, gateway="gw", site="s",
                          nonce=new_nonce())  # fmt: skip
    _, meta = decode_arrays(data, allowed_dtypes=frozenset({"F32"}))
    assert parse_eval_meta(meta, partial=True, contributors=3) == EvaluationSums(40, 19.0, 24.5, 2)
    # the totals only: no device's own numbers are in the partial
    assert "7.0" not in meta.values() and "30" not in meta.values()


def test_a_partial_with_no_evaluating_device_carries_no_eval_keys() -> None:
    cohort = Cohort(SPEC)
    assert cohort.add(decode(payload("d1", {}), "d1"))
    data = encode_partial(cohort, job_id="job1", round_number=1, gateway="gw", site="s",
                          nonce=new_nonce())  # fmt: skip
    _, meta = decode_arrays(data, allowed_dtypes=frozenset({"F32"}))
    assert not any(k.startswith("eval_") for k in meta)


@pytest.mark.parametrize(
    ("evaluation", "error", "match"),
    [
        ({"eval_examples": "10", "eval_correct": "11", "eval_loss_sum": "1"}, ValidationError,
         "more than eval_examples"),
        ({"eval_examples": "10", "eval_correct": "5", "eval_loss_sum": "nan"}, NonFiniteError,
         "not finite"),
        ({"eval_examples": "10", "eval_correct": "5", "eval_loss_sum": "-2"}, ValidationError,
         ">= 0"),
        ({"eval_examples": "0", "eval_correct": "0", "eval_loss_sum": "0"}, ValidationError,
         "at least one example"),
        ({"eval_examples": "10", "eval_correct": "5"}, ValidationError, "all of them or none"),
        ({"eval_examples": "1e3", "eval_correct": "5", "eval_loss_sum": "1"}, ValidationError,
         "must be an integer"),
    ],
)  # fmt: skip
def test_a_bad_evaluation_refuses_the_whole_update(
    evaluation: dict[str, str], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        decode(payload("d1", evaluation), "d1")


def test_an_update_of_a_dp_round_must_not_carry_an_evaluation() -> None:
    cohort = Cohort(SPEC, uniform=True)  # a DP round: every clipped update weighs 1
    sums = eval_meta(EvaluationSums(10, 5.0, 3.0, 1))
    with pytest.raises(ValidationError, match="differential privacy"):
        cohort.add(decode(payload("d1", sums), "d1"))
    assert cohort.num_accepted == 0 and cohort.evaluation == EvaluationSums()
    assert dict(cohort.rejected())["d1"].startswith("an update under differential privacy")
    assert cohort.add(decode(payload("d1", {}), "d1"))  # without it, the update is welcome
