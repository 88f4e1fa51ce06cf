"""A job with a label selector, through real gateways: the gateways forward their devices'
labels, the coordinator counts the matching devices per gateway and gives quotas only where they
are, and the round commits with the matching devices alone.

Real PKI, coordinator, gateways (with their uplinks) and device agents training on their own
stores, in one process (:mod:`tests.gateway.fleet_world`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedge.gateway.service import GatewayService
from fedge.transport import messages as m

from .fleet_world import World, job

NORTH = {"zone": "north", "hw": "pi4"}
SOUTH = {"zone": "south", "hw": "pi4"}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(
        tmp_path,
        {
            "s1": ("gw-a", {"a0": NORTH, "a1": NORTH, "a2": SOUTH}),
            "s2": ("gw-b", {"b0": SOUTH, "b1": {}}),
        },
    )
    yield w
    w.close()


def test_a_selector_job_commits_with_the_matching_devices_behind_a_gateway(world: World) -> None:
    svc = world.svc
    svc.admin.create_job(world.admin, job(selector={"zone": "north"}))
    for agent in world.agents.values():
        agent.step()  # no round yet: a Wait; each gateway now knows its devices and labels
        assert agent.stats.tasks == 0
    world.gateways_check_in()  # the labels reach the coordinator
    assert svc.store.get_device("a0").labels == NORTH  # type: ignore[union-attr]
    assert svc.store.get_device("b1").labels == {}  # type: ignore[union-attr]
    svc.tick()
    live = svc.live_round("digits")
    assert live is not None and live.machine.state.value == "configuring"
    assert live.machine.quotas == {"gw-a": 2}  # gw-b has no device of zone north
    world.gateways_check_in()  # gw-a takes its quota and fetches the model
    for agent in world.agents.values():
        agent.step()
    trained = {name for name, a in world.agents.items() if a.stats.delivered}
    assert trained == {"a0", "a1"}
    assert world.agents["a2"].stats.tasks == 0  # at the right gateway, but zone south
    world.gateways_send()  # gw-a's round is complete: its partial goes up
    svc.tick()
    (first,) = svc.admin.get_job(world.admin, "digits").rounds
    assert first.state == "committed", first.reason
    assert first.participants == 2 and first.gateways_reported == 1
    assert world.participants("digits", 1) == {"a0", "a1"}


def test_a_selector_nobody_matches_never_opens_and_says_why(world: World) -> None:
    svc = world.svc
    svc.admin.create_job(world.admin, job(selector={"zone": "east"}, training_deadline_s=5.0))
    for agent in world.agents.values():
        agent.step()
    world.gateways_check_in()
    svc.tick()
    live = svc.live_round("digits")
    assert live is not None and live.machine.state.value == "planned"
    world.clock.now += 60  # a whole round's time: the round is abandoned, not kept forever
    svc.tick()
    first = svc.admin.get_job(world.admin, "digits").rounds[0]
    assert first.state == "abandoned"
    assert "0 eligible device(s) matching the selector zone=east" in first.reason


def test_labels_are_forwarded_when_new_or_changed_and_refreshed_while_online(
    world: World,
) -> None:
    gateway = world.sites["s1"].gateway
    gateway.roster.label_refresh_s = 60.0
    for name in ("a0", "a1"):
        world.agents[name].step()
    request = gateway.checkin_request()
    assert request.device_labels == {"a0": NORTH, "a1": NORTH}
    gateway.labels_sent(request)  # the coordinator took them
    assert gateway.checkin_request().device_labels == {}  # nothing new to say
    world.agents["a0"].labels = {"zone": "west"}
    world.agents["a0"].step()
    assert gateway.checkin_request().device_labels == {"a0": {"zone": "west"}}  # changed
    gateway.labels_sent(gateway.checkin_request())
    world.clock.now += 61
    for name in ("a0", "a1"):
        world.agents[name].step()  # still online
    assert set(gateway.checkin_request().device_labels) == {"a0", "a1"}  # refreshed


def test_labels_too_large_to_forward_are_not_sent_and_said_once(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    gateway: GatewayService = world.sites["s1"].gateway
    agent = world.agents["a0"]
    agent.labels = {"zone": "north", "note": "x" * 129}  # a value over 128 characters
    agent.step()
    agent.step()
    assert gateway.checkin_request().device_labels == {}
    assert caplog.text.count("labels of device a0 are not forwarded") == 1
    world.gateways_check_in()  # the check-in itself goes through
    agent.labels = dict(NORTH)
    agent.step()
    assert gateway.checkin_request().device_labels == {"a0": NORTH}


def test_the_coordinator_takes_check_ins_with_and_without_labels(world: World) -> None:
    svc, gw_a = world.svc, world.identity("gw-a")
    older = m.GatewayCheckIn.model_validate_json(  # a gateway from before labels were forwarded
        '{"gateway_id": "gw-a", "site": "s1", "nonce": "' + m.new_nonce() + '",'
        ' "online_devices": 1, "eligible_devices": 1}'
    )
    assert older.device_labels == {}
    assert svc.gateway_checkin(gw_a, older).assignments == []
    svc.store.register_devices({"b0": "s2"}, "gw-b", world.clock())
    labelled = older.model_copy(
        update={"nonce": m.new_nonce(), "device_labels": {"a0": NORTH, "b0": NORTH}}
    )
    svc.gateway_checkin(gw_a, labelled)
    assert svc.store.get_device("a0").labels == NORTH  # type: ignore[union-attr]
    assert svc.store.get_device("b0").labels == {}  # type: ignore[union-attr]  # site s2's
    answer = m.GatewayAssignments.model_validate_json('{"assignments": [], "retry_after_s": 1}')
    assert answer.revoked_devices == []  # an older coordinator's answer: nobody is revoked
    with pytest.raises(ValueError, match="128"):
        m.GatewayCheckIn(
            gateway_id="gw-a", site="s1", nonce=m.new_nonce(), online_devices=1,
            eligible_devices=1, device_labels={"a0": {"zone": "n" * 129}},
        )  # fmt: skip
    with pytest.raises(ValueError, match="32"):
        m.GatewayCheckIn(
            gateway_id="gw-a", site="s1", nonce=m.new_nonce(), online_devices=1,
            eligible_devices=1, device_labels={"a0": {f"k{i}": "v" for i in range(33)}},
        )  # fmt: skip
