"""A partial may name only devices whose site the coordinator knows from their certificate.

Real PKI (fleet CA, CRL), real coordinator service and gateway service in process: a gateway of
site s1 cannot report a device of site s2 that the coordinator has never seen, and its own
devices are registered by their certificates before the partial that names them is sent.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from tests.gateway.conftest import make_update_payload
from tests.gateway.fleet_world import ToCoordinator as Link

from fedge.coordinator import ArtifactStore, CoordinatorService, CoordinatorSettings, Store
from fedge.core.params import ParamSpec
from fedge.errors import AuthorizationError
from fedge.gateway.cache import ModelCache
from fedge.gateway.service import GatewayService
from fedge.gateway.uplink import Uplink
from fedge.identity import Identity
from fedge.storage.outbox import Outbox
from fedge.transport import messages as m

from .helpers import ADMIN, Clock, device_updates, model_params, partial_payload, spec
from .test_secure_aggregation import Fleet


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return Fleet(tmp_path_factory.mktemp("fleet"))


def _service(tmp: Path, fleet: Fleet, clock: Clock) -> CoordinatorService:
    settings = CoordinatorSettings(poll_interval_s=1.0, max_consecutive_abandoned=5)
    store = Store(f"sqlite:///{tmp / 'coord.db'}")
    return CoordinatorService(
        store, ArtifactStore(tmp / "artifacts"), settings, clock, secagg=fleet.authority()
    )


def _open(svc: CoordinatorService, gw: Identity) -> ParamSpec:
    svc.admin.create_job(ADMIN, spec(devices_per_round=2, min_devices=1, rounds=1))
    req = m.GatewayCheckIn(
        gateway_id=gw.name, site=str(gw.site), nonce=m.new_nonce(),
        online_devices=2, eligible_devices=2,
    )  # fmt: skip
    svc.gateway_checkin(gw, req)
    svc.tick()
    assert svc.gateway_checkin(gw, req).assignments  # the quota is handed out
    live = svc.live_round("digits")
    assert live is not None
    return ParamSpec.of(model_params(svc, live.base_sha256))


def _der(fleet: Fleet, name: str) -> str:
    return base64.b64encode(fleet.identity(name).der).decode()


def test_an_unseen_device_of_another_site_is_refused(tmp_path: Path, fleet: Fleet) -> None:
    svc = _service(tmp_path, fleet, Clock())
    gw_a = fleet.identity("gw-a")  # site s1
    pspec = _open(svc, gw_a)
    foreign = device_updates(pspec, ["d-s2-0"], seed=1)  # a device of s2, never seen
    with pytest.raises(AuthorizationError, match="not registered"):
        svc.submit_partial(gw_a, "digits", 1, partial_payload(gw_a, "digits", 1, foreign))
    # nor can gw-a register it: its certificate says site s2
    answer = svc.register_devices(
        gw_a, m.DeviceCertificates(certificates=[_der(fleet, "d-s2-0"), _der(fleet, "d-s1-0")])
    )
    assert answer.registered == ["d-s1-0"]
    assert "site 's2'" in answer.refused["d-s2-0"]
    assert "gw-a" not in {r.gateway_id for r in svc.store.participants("digits", 1)}
    with pytest.raises(AuthorizationError, match="not registered"):
        svc.submit_partial(gw_a, "digits", 1, partial_payload(gw_a, "digits", 1, foreign))
    own = device_updates(pspec, ["d-s1-0"], seed=2)
    assert svc.submit_partial(gw_a, "digits", 1, partial_payload(gw_a, "digits", 1, own)).accepted
    assert svc.store.get_device("d-s1-0").site == "s1"  # type: ignore[union-attr]
    assert svc.store.get_device("d-s2-0") is None  # the refused claim left no trace


def test_a_device_registered_at_its_own_site_is_refused_elsewhere(
    tmp_path: Path, fleet: Fleet
) -> None:
    svc = _service(tmp_path, fleet, Clock())
    gw_a, gw_b = fleet.identity("gw-a"), fleet.identity("gw-b")
    pspec = _open(svc, gw_a)
    answer = svc.register_devices(gw_b, m.DeviceCertificates(certificates=[_der(fleet, "d-s2-1")]))
    assert answer.registered == ["d-s2-1"] and not answer.refused
    claimed = device_updates(pspec, ["d-s2-1"], seed=3)
    with pytest.raises(AuthorizationError, match="belongs to site 's2'"):
        svc.submit_partial(gw_a, "digits", 1, partial_payload(gw_a, "digits", 1, claimed))


def test_a_foreign_ca_certificate_is_not_registered(tmp_path: Path, fleet: Fleet) -> None:
    svc = _service(tmp_path, fleet, Clock())
    other = Fleet(tmp_path / "other")  # another fleet's CA issued this one
    answer = svc.register_devices(
        fleet.identity("gw-a"),
        m.DeviceCertificates(
            certificates=[base64.b64encode(other.identity("d-s1-0").der).decode()]
        ),
    )
    assert answer.registered == [] and "CA" in next(iter(answer.refused.values()))


def test_the_gateway_registers_its_devices_before_a_partial_names_them(
    tmp_path: Path, fleet: Fleet
) -> None:
    clock = Clock()
    svc = _service(tmp_path, fleet, clock)
    gw_a = fleet.identity("gw-a")
    _open(svc, gw_a)
    link = Link(svc, gw_a)
    gateway = GatewayService(
        gateway_id="gw-a",
        site="s1",
        cache=ModelCache(tmp_path / "gw" / "models", link.model),
        outbox=Outbox(tmp_path / "gw" / "outbox.sqlite"),
        clock=clock,
    )
    uplink = Uplink(gateway, link)
    assert uplink.checkin_once() > 0  # takes the round and pre-fetches its model
    task = gateway.checkin(
        fleet.identity("d-s1-0"),
        m.CheckInRequest(
            device_id="d-s1-0", nonce=m.new_nonce(), eligibility=m.Eligibility(num_examples=10)
        ),
    )
    assert isinstance(task, m.TaskAssignment)
    assert set(gateway.roster.unregistered_certificates()) == {"d-s1-0"}
    uplink.checkin_once()  # the next check-in with the coordinator registers it ahead of time
    assert gateway.roster.unregistered_certificates() == {}
    assert svc.store.get_device("d-s1-0").site == "s1"  # type: ignore[union-attr]
    pspec = ParamSpec.of(model_params(svc, task.model_sha256))
    payload, _ = make_update_payload(pspec, "d-s1-0", job="digits", rnd=task.round)
    assert gateway.submit_update(fleet.identity("d-s1-0"), "digits", task.round, payload).accepted
    clock.now = task.deadline + 31.0  # the gateway's report is due
    assert uplink.send_once()
    assert uplink.delivered == 1 and uplink.discarded == 0
    assert [p.device_id for p in svc.store.participants("digits", task.round)] == ["d-s1-0"]
    svc.tick()
    assert svc.admin.get_job(ADMIN, "digits").rounds[0].state == "committed"
