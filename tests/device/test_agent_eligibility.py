"""The device agent asks for work only while its eligibility policy says yes.

A real :class:`~fedge.device.eligibility.ConditionsPolicy` reads a power-supply directory laid out
as Linux's ``/sys/class/power_supply``; the agent's link counts check-ins and answers ``Wait``.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from fedge.device.agent import DeviceAgent
from fedge.device.backoff import Backoff
from fedge.device.eligibility import ConditionsPolicy
from fedge.device.store import LocalStore
from fedge.privacy import PrivacyLedger
from fedge.storage.outbox import Outbox
from fedge.transport.messages import CheckInRequest, ModelRelease, Receipt, TaskAssignment, Wait


class CountingLink:
    """A gateway that only ever says "wait", counting the check-ins it gets."""

    def __init__(self) -> None:
        self.checkins: list[CheckInRequest] = []

    def checkin(self, request: CheckInRequest) -> TaskAssignment | Wait:
        self.checkins.append(request)
        return Wait(retry_after_s=3.0, reason="no round needs you now")

    def model(self, sha256: str) -> bytes:
        raise AssertionError("no task was handed out")

    def release(self, sha256: str) -> ModelRelease:
        raise AssertionError("no task was handed out")

    def submit_update(self, job_id: str, round_number: int, payload: bytes) -> Receipt:
        raise AssertionError("no task was handed out")


def _battery(root: Path, status: str) -> Path:
    battery = root / "power_supply" / "BAT0"
    battery.mkdir(parents=True, exist_ok=True)
    (battery / "type").write_text("Battery\n")
    (battery / "status").write_text(f"{status}\n")
    return root / "power_supply"


def test_no_check_in_while_the_policy_says_no(tmp_path: Path) -> None:
    supplies = _battery(tmp_path, "Discharging")
    store = LocalStore(tmp_path / "data.sqlite", retention_s=3600)
    link = CountingLink()
    agent = DeviceAgent(
        device_id="dev-1",
        link=link,
        store=store,
        policy=ConditionsPolicy(min_examples=10, power_supply_dir=str(supplies)),
        ledger=PrivacyLedger(tmp_path / "privacy.sqlite", 10.0),
        outbox=Outbox(tmp_path / "outbox.sqlite"),
        idle_poll_s=7.0,
        backoff=Backoff(rng=random.Random(0)),
    )
    try:
        for _ in range(3):  # on battery, and no data yet
            assert agent.step() == 7.0  # looks again after idle_poll_s, asks nobody
        assert link.checkins == [] and agent.stats.checkins == 0
        assert agent.stats.last_reason == "on battery; 0 local examples, need 10"
        rng = np.random.default_rng(0)
        store.append(rng.random((20, 64), dtype=np.float32), rng.integers(0, 10, 20))
        assert agent.step() == 7.0 and link.checkins == []  # data now, still on battery
        assert agent.stats.last_reason == "on battery"
        _battery(tmp_path, "Charging")  # plugged in
        assert agent.step() >= 3.0  # it asked; the gateway said wait 3 s
        (request,) = link.checkins
        assert request.eligibility.charging is True and request.eligibility.num_examples == 20
        _battery(tmp_path, "Discharging")  # unplugged again: no more check-ins
        assert agent.step() == 7.0 and len(link.checkins) == 1 and agent.stats.checkins == 1
    finally:
        agent.outbox.close()
        agent.ledger.close()
        store.close()
