"""A round that can never open is abandoned at its deadline, so a job short of devices ends."""

from __future__ import annotations

from pathlib import Path

from .helpers import ADMIN, GW_A, Clock, checkin, make_service, spec


def test_a_round_short_of_devices_is_abandoned_and_the_job_fails(tmp_path: Path) -> None:
    clock = Clock()
    svc = make_service(tmp_path, clock)  # max_consecutive_abandoned = 5
    svc.admin.create_job(
        ADMIN, spec(min_devices=3, training_deadline_s=60.0, report_deadline_s=30.0)
    )
    checkin(svc, GW_A, eligible=2)  # one short of min_devices, for good
    svc.tick()
    assert [r.state for r in svc.admin.get_job(ADMIN, "digits").rounds] == ["planned"]
    clock.now += 89.9  # a whole round's time (training + report deadline) has not passed yet
    checkin(svc, GW_A, eligible=2)
    svc.tick()
    assert [r.state for r in svc.admin.get_job(ADMIN, "digits").rounds] == ["planned"]
    clock.now += 0.1
    svc.tick()
    rounds = svc.admin.get_job(ADMIN, "digits").rounds
    assert [r.state for r in rounds] == ["abandoned", "planned"]  # the next attempt is planned
    assert "never opened" in rounds[0].reason and "min_devices = 3" in rounds[0].reason
    assert "2 eligible" in rounds[0].reason
    for _ in range(4):
        clock.now += 90.0
        checkin(svc, GW_A, eligible=2)
        svc.tick()
    job = svc.admin.get_job(ADMIN, "digits")
    assert job.state == "failed"
    assert "5 rounds in a row were abandoned" in svc.store.get_job("digits").reason
    assert [r.state for r in job.rounds] == ["abandoned"] * 5
    assert svc.store.list_model_versions("digits")[-1].round is None  # nothing was published


def test_a_paused_job_keeps_its_planned_round(tmp_path: Path) -> None:
    clock = Clock()
    svc = make_service(tmp_path, clock)
    svc.admin.create_job(ADMIN, spec(min_devices=3))
    svc.tick()
    svc.admin.pause_job(ADMIN, "digits")
    clock.now += 1_000.0
    svc.tick()
    job = svc.admin.get_job(ADMIN, "digits")
    assert job.state == "paused" and [r.state for r in job.rounds] == ["planned"]
