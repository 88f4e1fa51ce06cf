"""A gateway hands no round to a device whose owner's ε limit it would pass, and says so once."""

from __future__ import annotations

import logging

import pytest

from fedge.gateway.rounds import RoundBook
from fedge.transport.messages import PrivacyPlan, RoundAssignment, TrainingPlan


def test_a_round_over_the_devices_budget_is_withheld_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    book = RoundBook()
    book.update(
        [
            RoundAssignment(
                job_id="job", round=1, task_name="digits_mlp", model_sha256="0" * 64, quota=2,
                training_deadline=100.0, report_deadline=110.0, plan=TrainingPlan(),
                privacy=PrivacyPlan(mode="distributed", clip_norm=1.0, epsilon_cost=30.0),
            )
        ],
        closed=(),
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="fedge.gateway.rounds"):
        for _ in range(3):  # the device checks in again and again
            assert book.assign("dev-1", {}, now=1.0, privacy_remaining=20.0) is None
    (record,) = caplog.records
    assert "dev-1 is not handed job/1" in record.getMessage() and "ε 30" in record.getMessage()
    state = book.assign("dev-2", {}, now=1.0, privacy_remaining=50.0)
    assert state is not None and state.handed == {"dev-2"}
