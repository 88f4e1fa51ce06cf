"""`fedge devices revoke` (the coordinator's admin API) reaches the gateways: each check-in answer
names the site's revoked devices; the gateway refuses them at once (403, reason ``revoked``),
stops counting them eligible and hands them no work, so the round commits with the site's other
devices. A device revoked after its update was summed costs its site that round's partial only,
and both sides say so in an error log, with what to do.

Real PKI, coordinator, gateways, uplinks and device agents in one process
(:mod:`tests.gateway.fleet_world`); tests/integration/test_revocation.py runs the same path with
real processes over mutual TLS.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedge.core.serde import decode_arrays
from fedge.errors import AuthorizationError, FedgeError
from fedge.gateway.service import partial_key
from fedge.transport import messages as m
from fedge.transport.errors import refusal_reason, status_for

from .fleet_world import World, job

LABELS = {"zone": "north"}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(
        tmp_path,
        {
            "s1": ("gw-a", {f"a{i}": LABELS for i in range(4)}),
            "s2": ("gw-b", {"b0": LABELS, "b1": LABELS}),
        },
    )
    yield w
    w.close()


def _checkin(world: World, device: str) -> m.TaskAssignment | m.Wait:
    request = m.CheckInRequest(
        device_id=device, nonce=m.new_nonce(), eligibility=m.Eligibility(num_examples=50)
    )
    return world.sites["s1"].gateway.checkin(world.identity(device), request)


def test_a_revoked_device_is_refused_by_its_gateway_and_the_round_commits_without_it(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    svc, gateway = world.svc, world.sites["s1"].gateway
    svc.admin.create_job(world.admin, job(devices_per_round=4, min_devices=2))
    site_a = ["a0", "a1", "a2"]
    for name in site_a:
        world.agents[name].step()  # seen by gw-a (no round yet)
    view = svc.admin.revoke_device(world.admin, "a2")  # `fedge devices revoke a2`
    assert view.revoked
    caplog.set_level(logging.INFO)
    world.gateways_check_in()  # the answer names a2: gw-a refuses it from now on
    world.gateways_check_in()  # and no longer counts it
    assert "device a2 was revoked through the coordinator's admin API" in caplog.text
    assert gateway.checkin_request().eligible_devices == 2
    with pytest.raises(AuthorizationError, match="revoked") as refused:
        _checkin(world, "a2")
    assert status_for(refused.value) == (403, "forbidden")
    assert refusal_reason(refused.value) == "revoked"  # fedge_requests_refused_total{reason}
    assert "refused device a2: revoked" in caplog.text
    svc.tick()
    live = svc.live_round("digits")
    assert live is not None and live.machine.quotas == {"gw-a": 2}  # a2 is not counted
    world.gateways_check_in()
    sha = live.base_sha256
    with pytest.raises(AuthorizationError, match="revoked"):
        gateway.model(world.identity("a2"), sha)  # no model for it either
    for name in site_a:
        world.agents[name].step()
    assert world.agents["a2"].stats.tasks == 0 and "revoked" in world.agents["a2"].stats.last_reason
    assert gateway.refused_revoked >= 3
    world.gateways_send()
    svc.tick()
    (first,) = svc.admin.get_job(world.admin, "digits").rounds
    assert first.state == "committed", first.reason
    assert world.participants("digits", 1) == {"a0", "a1"}
    svc.store.set_revoked("a2", False)  # the list is whole each time: taken back, admitted again
    world.gateways_check_in()
    assert isinstance(_checkin(world, "a2"), m.Wait)


def test_a_device_revoked_while_it_holds_a_task_frees_its_slot(world: World) -> None:
    svc = world.svc
    svc.admin.create_job(world.admin, job(devices_per_round=3, min_devices=3))
    for name in ("a0", "a1", "a2", "a3"):
        world.agents[name].step()
    world.gateways_check_in()
    svc.tick()
    world.gateways_check_in()  # gw-a holds a quota of 3
    assert isinstance(_checkin(world, "a2"), m.TaskAssignment)  # a2 takes a slot, never reports
    for name in ("a0", "a1", "a3"):
        world.agents[name].step()
    assert world.agents["a3"].stats.tasks == 0  # the quota is used up
    svc.admin.revoke_device(world.admin, "a2")
    world.gateways_check_in()  # a2's slot goes back to the site
    world.agents["a3"].step()
    assert world.agents["a3"].stats.delivered == 1
    world.gateways_send()  # complete: every holder reported, no wait for the deadline
    svc.tick()
    (first,) = svc.admin.get_job(world.admin, "digits").rounds
    assert first.state == "committed", first.reason
    assert world.participants("digits", 1) == {"a0", "a1", "a3"}


def _train_everyone(world: World) -> None:
    """Round 1 of a job over both sites: a0, a1 at gw-a and b0, b1 at gw-b train and report."""
    world.svc.admin.create_job(world.admin, job(devices_per_round=4, min_devices=2))
    names = ("a0", "a1", "b0", "b1")
    for name in names:
        world.agents[name].step()
    world.gateways_check_in()
    world.svc.tick()
    world.gateways_check_in()
    for name in names:
        world.agents[name].step()
        assert world.agents[name].stats.delivered == 1


def test_a_device_revoked_after_its_update_was_summed_costs_its_site_one_round_and_says_so(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    svc, gateway = world.svc, world.sites["s1"].gateway
    _train_everyone(world)
    svc.admin.revoke_device(world.admin, "a1")  # its update is in gw-a's sum already
    world.gateways_check_in()  # gw-a learns it, then closes its complete round
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(
        "revoked device a1 already has its update in this site's sum" in e
        and "To lose nothing, revoke between rounds" in e
        for e in errors
    ), errors
    assert any("this site reports no update" in e for e in errors), errors
    item = gateway.outbox.get(partial_key("digits", 1))
    assert item is not None
    _, meta = decode_arrays(item.payload, allowed_dtypes=frozenset({"F32"}))
    assert meta["num_accepted"] == "0" and "revoked" in meta["rejected"]
    world.gateways_send()  # an empty partial: accepted, it says gw-a's site is done
    assert world.sites["s1"].uplink.delivered == 1
    svc.tick()  # both gateways reported: no wait for the report deadline
    (first,) = svc.admin.get_job(world.admin, "digits").rounds
    assert first.state == "committed", first.reason
    assert first.gateways_reported == 2 and world.participants("digits", 1) == {"b0", "b1"}


def test_a_partial_naming_a_revoked_device_is_refused_with_what_happened_and_what_to_do(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The revocation reached the coordinator after gw-a formed its partial (or gw-a is older
    and never learns revocations): the coordinator refuses the partial, and both say why."""
    svc = world.svc
    _train_everyone(world)
    svc.admin.revoke_device(world.admin, "a1")
    site_a = world.sites["s1"].uplink
    site_a.send_once()  # no check-in in between: gw-a does not know yet
    assert site_a.discarded == 1 and site_a.delivered == 0
    coordinator = [r.getMessage() for r in caplog.records if r.name.startswith("fedge.coordinator")]
    refusal = next(e for e in coordinator if "refused partial of gateway gw-a" in e)
    for words in (
        "counts 1 revoked device(s) ('a1'",
        "refused whole: the 1 other update(s) it holds are lost for this round only",
        "revoke between rounds",
    ):
        assert words in refusal, refusal
    gateway_errors = [r.getMessage() for r in caplog.records if r.name == "fedge.gateway.uplink"]
    assert any("refused partial partial/digits/1 for good" in e for e in gateway_errors)
    world.gateways_send()
    world.clock.now += 200  # gw-a never reports: the round closes at its report deadline
    svc.tick()
    (first,) = svc.admin.get_job(world.admin, "digits").rounds
    assert first.state == "committed", first.reason
    assert world.participants("digits", 1) == {"b0", "b1"}


def test_each_gateway_is_told_its_own_sites_revocations(world: World) -> None:
    svc = world.svc
    svc.store.register_devices({"a0": "s1"}, "gw-a", world.clock())
    svc.store.register_devices({"b0": "s2"}, "gw-b", world.clock())
    for device in ("a0", "b0", "never-seen"):
        svc.admin.revoke_device(world.admin, device)

    def revoked(gw: str, site: str) -> list[str]:
        request = m.GatewayCheckIn(
            gateway_id=gw, site=site, nonce=m.new_nonce(), online_devices=0, eligible_devices=0
        )
        return svc.gateway_checkin(world.identity(gw), request).revoked_devices

    assert revoked("gw-a", "s1") == ["a0", "never-seen"]
    assert revoked("gw-b", "s2") == ["b0", "never-seen"]
    with pytest.raises(FedgeError):  # a gateway cannot ask for another site's
        revoked("gw-a", "s2")
