"""Federated evaluation sums: example-weighted means, the wire form and which rounds carry them."""

from __future__ import annotations

import pytest

from fedge.aggregation.evaluation import (
    EvaluationSums,
    check_evaluation_allowed,
    eval_meta,
    parse_eval_meta,
    reports_evaluation,
)
from fedge.errors import ValidationError


def test_sums_give_the_example_weighted_mean_like_flower_and_tff() -> None:
    # device A: 10 examples at accuracy 0.9, loss 0.2; device B: 90 examples at 0.5, loss 1.0
    a, b = EvaluationSums(10, 9.0, 2.0, 1), EvaluationSums(90, 45.0, 90.0, 1)
    total = a + b
    assert total == EvaluationSums(100, 54.0, 92.0, 2)
    assert total.accuracy == pytest.approx((10 * 0.9 + 90 * 0.5) / 100)  # Σnₖ·accₖ / Σnₖ
    assert total.loss == pytest.approx((10 * 0.2 + 90 * 1.0) / 100)
    assert EvaluationSums().accuracy is None and EvaluationSums().loss is None


def test_wire_form_round_trips_for_updates_and_partials() -> None:
    one = EvaluationSums(12, 7.0, 3.25, 1)
    assert parse_eval_meta(eval_meta(one)) == one
    many = EvaluationSums(120, 70.5, 33.0, 4)
    assert parse_eval_meta(eval_meta(many, partial=True), partial=True, contributors=4) == many
    assert eval_meta(None) == {} and parse_eval_meta({"kind": "update"}) is None
    assert eval_meta(EvaluationSums(), partial=True) == {}  # a partial over no evaluating device
    with pytest.raises(ValidationError, match="all of them or none"):
        parse_eval_meta(eval_meta(one), partial=True)  # a partial must say how many devices


def test_only_plain_rounds_without_dp_carry_an_evaluation() -> None:
    assert reports_evaluation("none", secure=False)
    assert not reports_evaluation("none", secure=True)
    for mode in ("central", "local", "distributed"):
        assert not reports_evaluation(mode, secure=False)
    check_evaluation_allowed(None, "central", secure=True)  # nothing sent: nothing to refuse
    check_evaluation_allowed(EvaluationSums(1, 1.0, 0.0, 1), "none", secure=False)
    with pytest.raises(ValidationError, match="secure aggregation"):
        check_evaluation_allowed(EvaluationSums(1, 1.0, 0.0, 1), "none", secure=True)
    with pytest.raises(ValidationError, match=r"differential privacy \(local\)"):
        check_evaluation_allowed(EvaluationSums(1, 1.0, 0.0, 1), "local", secure=False)
