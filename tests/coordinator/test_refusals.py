"""Refusals of models reach the coordinator, canary stage or not, end to end in process.

A device refuses a model (a tampered payload, a manifest with a wrong signature) and reports it
to its gateway, which forwards it; a gateway reports the models and manifests it refuses itself;
a device connected directly reports to the coordinator. The coordinator records each refusal in
the registry (``fedge models show``: ``refusals``), in the audit log (``refusal``) and in the
``fedge_model_refusals`` gauge. The services are the real ones (real SQLite, Ed25519,
predictors); only HTTP is left out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedge.coordinator import CoordinatorService
from fedge.coordinator.fleet_metrics import observe_coordinator
from fedge.device.follower import ProductionFollower
from fedge.device.predictor import Predictor
from fedge.errors import ProtocolError, SignatureError, UnknownNameError, ValidationError
from fedge.gateway.cache import ModelCache
from fedge.gateway.service import GatewayService
from fedge.identity import Identity, Role
from fedge.storage.outbox import Outbox
from fedge.telemetry.metrics import setup_metrics, shutdown_metrics
from fedge.transport import messages as m
from fedge.transport.reports import ReportQueue, refusal_report

from .conftest import identity
from .helpers import ADMIN, GW_A, GW_B
from .test_releases import KEY, commit_one_round, flipped
from .test_rollouts import ViaGateway, seq, service


def _gateway(
    tmp: Path,
    svc: CoordinatorService,
    gw: Identity,
    alter_payload: Callable[[bytes], bytes] = lambda b: b,
    fetch_release: Callable[[str], m.ModelRelease] | None = None,
) -> GatewayService:
    """A verifying gateway that reports its refusals; ``alter_payload``: what its upstream does
    to the payloads it fetches (a tampering link), ``fetch_release``: another release source."""
    sink = lambda job, r: svc.report_health(gw, job, r)  # noqa: E731
    gateway = GatewayService(
        gateway_id=gw.name,
        site=str(gw.site),
        cache=ModelCache(
            tmp / f"{gw.name}-models",
            lambda sha: alter_payload(svc.model(gw, sha)),
            fetch_release=fetch_release or (lambda sha: svc.release(gw, sha)),
            release_key=KEY.public_key(),
            reports=ReportQueue(sink),
        ),
        outbox=Outbox(tmp / f"{gw.name}-outbox.sqlite"),
    )
    gateway.production_source = lambda job: svc.production(gw, job)
    gateway.health_sink = sink
    return gateway


class Tampering(ViaGateway):
    """A device's link on which its model downloads are altered."""

    def model(self, sha256: str) -> bytes:
        return super().model(sha256)[:-4] + b"\x00\x00\x80\x7f"


def _follower(link: ViaGateway) -> ProductionFollower:
    return ProductionFollower(
        link,
        Predictor("digits_mlp"),
        "digits",
        KEY.public_key(),
        health_sink=link.report_health,
    )


def _refusals(svc: CoordinatorService, sha: str) -> dict[str, m.RefusalView]:
    return {r.reporter: r for r in svc.admin.get_model(ADMIN, sha).refusals}


def test_device_refusals_travel_through_the_gateway_outside_a_canary_stage(
    tmp_path: Path,
) -> None:
    svc = service(tmp_path, policy=None)  # no canary stage at all
    _, v1 = commit_one_round(svc)
    gateway = _gateway(tmp_path, svc, GW_A)
    tampered = _follower(Tampering(gateway, identity(Role.DEVICE, "a1", "s1")))
    assert tampered.sync() is None  # a tampered payload: refused, nothing served
    forged_link = ViaGateway(gateway, identity(Role.DEVICE, "a2", "s1"))
    forged_link.replay = flipped(svc.production(GW_A, "digits"))  # a wrong signature
    forged = _follower(forged_link)
    assert forged.sync() is None

    refusals = _refusals(svc, v1)
    assert set(refusals) == {"a1", "a2"}
    for r in refusals.values():
        assert (r.tier, r.via, r.check, r.sequence, r.count) == ("device", "gw-a", "release", 1, 1)
    assert "altered" in refusals["a1"].reason and "signature" in refusals["a2"].reason

    entries = svc.driver.audit.entries(kinds=["refusal"])
    assert sorted(e.actor for e in entries) == ["a1", "a2"]
    assert {e.subject for e in entries} == {v1}
    assert all(e.details["version"] == "digits/r1" for e in entries)
    assert all(e.details["via"] == "gw-a" for e in entries)

    tampered.sync()  # the same manifest is not acted on again: no second report
    assert _refusals(svc, v1)["a1"].count == 1
    # the forged manifest is remembered as refused, not the model: the genuine one loads
    forged_link.replay = None
    assert forged.sync() == "digits/r1"


def test_gateway_refusals_reach_the_coordinator_and_it_keeps_its_manifest(
    tmp_path: Path,
) -> None:
    svc = service(tmp_path, policy=None)
    initial, v1 = commit_one_round(svc)
    device = identity(Role.DEVICE, "b1", "s2")

    # a gateway whose upstream link alters the payloads: it refuses the model, and reports it
    tampering = _gateway(tmp_path, svc, GW_B, alter_payload=lambda b: b + b"!")
    with pytest.raises(ValidationError, match="sha256"):
        tampering.production(device, "digits")  # nothing held before: the device gets an error
    gw_b = _refusals(svc, v1)["gw-b"]
    assert (gw_b.tier, gw_b.via, gw_b.check) == ("gateway", None, "release")
    assert "sha256" in gw_b.reason

    # a verifying gateway holds the genuine manifest; a badly signed one later is refused,
    # reported, and the held one stays what its devices get
    gateway = _gateway(tmp_path, svc, GW_A)
    peer = identity(Role.DEVICE, "a1", "s1")
    held = gateway.production(peer, "digits")
    assert held.sha256 == v1 and seq(held) == 1
    gateway.production_source = lambda job: flipped(svc.production(GW_A, job))
    assert gateway.production(peer, "digits") == held
    assert gateway.manifests.accepted("digits") is not None
    gw_a = _refusals(svc, v1)["gw-a"]
    assert (gw_a.tier, gw_a.check, gw_a.sequence) == ("gateway", "release", 1)
    assert "manifest" in gw_a.reason

    # an unsigned model a round trains from: refused at the pre-fetch, reported under its job
    def unsigned(sha: str) -> m.ModelRelease:
        raise UnknownNameError(f"model {sha} has no release signature")

    unsigned_gw = _gateway(tmp_path / "u", svc, GW_A, fetch_release=unsigned)
    with pytest.raises(SignatureError, match="unsigned"):
        unsigned_gw.cache.get(initial, job_id="digits")
    assert _refusals(svc, initial)["gw-a"].check == "release"

    actors = sorted(e.actor for e in svc.driver.audit.entries(kinds=["refusal"]))
    assert actors == ["gw-a", "gw-a", "gw-b"]  # gw-a: the manifest of v1, the initial model
    assert all(e.details["tier"] == "gateway" for e in svc.driver.audit.entries(kinds=["refusal"]))


def test_direct_device_refusals_are_recorded_once_and_counted_by_reason(tmp_path: Path) -> None:
    metrics = setup_metrics("coordinator", "coord", environ={})
    try:
        svc = service(tmp_path, policy=None)
        observe_coordinator(metrics, svc.store, svc.settings)
        initial, v1 = commit_one_round(svc)
        direct = identity(Role.DEVICE, "solo", "s9")
        why = refusal_report(v1, "accuracy", "holdout accuracy 0.1 is below the floor 0.5")
        receipt = svc.report_health(direct, "digits", why)
        assert receipt.accepted and "digits/r1" in receipt.reason
        svc.report_health(direct, "digits", why)  # reported again: counted, not audited again
        solo = _refusals(svc, v1)["solo"]
        assert (solo.tier, solo.via, solo.check, solo.count) == ("device", None, "accuracy", 2)
        assert len(svc.driver.audit.entries(kinds=["refusal"])) == 1
        svc.report_health(GW_A, "digits", refusal_report(initial, "release", "unsigned"))
        svc.report_health(GW_B, "digits", refusal_report(v1, "release", "bad signature"))

        with pytest.raises(UnknownNameError):
            svc.report_health(direct, "no-such-job", why)
        with pytest.raises(ProtocolError, match="directly"):  # passed checks: canaries only
            svc.report_health(direct, "digits", why.model_copy(update={"check": "passed"}))
        with pytest.raises(ProtocolError, match="name one"):  # a gateway's own "passed"
            svc.report_health(GW_A, "digits", why.model_copy(update={"check": "passed"}))

        def gauge(**labels: str) -> float:
            return sum(
                s.value
                for family in text_string_to_metric_families(metrics.render().decode())
                for s in family.samples
                if s.name == "fedge_model_refusals"
                and all(s.labels.get(k) == v for k, v in labels.items())
            )

        assert gauge(job="digits", reason="accuracy", tier="device") == 1
        assert gauge(job="digits", reason="release", tier="gateway") == 2  # two versions
        assert gauge(job="digits") == 3
    finally:
        shutdown_metrics()
