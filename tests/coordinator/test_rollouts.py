"""Signed production manifests and staged (canary) rollouts, service level, in process.

The coordinator, gateways and devices are the real services (real SQLite, real Ed25519, real
predictors); only HTTP is left out (see tests/integration/test_canary.py for processes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedge.coordinator import ArtifactStore, CoordinatorService, CoordinatorSettings, Store
from fedge.coordinator.canary import CanaryPolicy
from fedge.core.params import ParamSpec
from fedge.device.follower import ProductionFollower
from fedge.device.predictor import HealthCheck, Predictor
from fedge.errors import AuthorizationError, ProtocolError
from fedge.gateway.cache import ModelCache
from fedge.gateway.service import GatewayService
from fedge.identity import Identity, Role
from fedge.storage.outbox import Outbox
from fedge.telemetry.metrics import setup_metrics, shutdown_metrics
from fedge.transport import messages as m
from fedge.transport.manifests import read_manifest

from .conftest import identity
from .helpers import (
    ADMIN,
    GW_A,
    GW_B,
    Clock,
    checkin,
    device_updates,
    model_params,
    partial_payload,
    spec,
)
from .test_registry import add_version
from .test_releases import KEY, commit_one_round

POLICY = CanaryPolicy(fraction=0.5, min_healthy=1, max_failures=0, hold_s=100.0)


def service(tmp: Path, policy: CanaryPolicy | None = POLICY) -> CoordinatorService:
    store = Store(f"sqlite:///{tmp / 'coord.db'}")
    settings = CoordinatorSettings(poll_interval_s=1.0, canary=policy)
    return CoordinatorService(
        store, ArtifactStore(tmp / "artifacts"), settings, Clock(), release_key=KEY
    )


def seq(release: m.ModelRelease) -> int:
    return read_manifest(release, KEY.public_key()).sequence


def second_version(svc: CoordinatorService, v1: str) -> str:
    acc = svc.admin.get_model(ADMIN, v1).metrics["accuracy"]
    return add_version(svc, v1, 2, acc + 0.01, 1.01)  # the release gate promotes it


def split(svc: CoordinatorService, sha: str) -> tuple[Identity, Identity]:
    view = svc.admin.get_model(ADMIN, sha).rollout
    assert view is not None and view.stage == "canary" and len(view.canary_gateways) == 1
    return (GW_A, GW_B) if view.canary_gateways == ["gw-a"] else (GW_B, GW_A)


def report(sha: str, sequence: int, check: str = "passed", device: str = "d1") -> m.HealthReport:
    return m.HealthReport.model_validate(
        {"sha256": sha, "sequence": sequence, "check": check, "device_id": device}
    )


def test_every_promotion_and_rollback_is_a_new_signed_manifest(tmp_path: Path) -> None:
    svc = service(tmp_path, policy=None)
    _, v1 = commit_one_round(svc)
    first = svc.production(GW_A, "digits")
    assert (first.sha256, seq(first), first.metadata["status"]) == (v1, 1, "production")
    assert svc.production(GW_A, "digits") == first  # asking again issues nothing new
    v2 = second_version(svc, v1)
    second = svc.production(GW_B, "digits")
    assert (second.sha256, seq(second)) == (v2, 2)
    svc.admin.rollback_model(ADMIN, "digits")
    back = svc.production(GW_A, "digits")
    assert (back.sha256, seq(back), back.metadata["version"]) == (v1, 3, "digits/r1")


def test_canary_widens_after_enough_healthy_reports(tmp_path: Path) -> None:
    svc = service(tmp_path)
    _, v1 = commit_one_round(svc)
    stable = svc.production(GW_A, "digits")  # r1: nothing before it, so no canary stage
    v2 = second_version(svc, v1)
    canary, other = split(svc, v2)
    on_canary = svc.production(canary, "digits")
    assert (on_canary.sha256, on_canary.metadata["status"], seq(on_canary)) == (v2, "canary", 2)
    assert svc.production(other, "digits") == stable  # the rest keep r1
    assert svc.production(identity(Role.DEVICE, "x", "s9"), "digits") == stable  # direct too

    with pytest.raises(AuthorizationError, match="not a canary"):
        svc.report_health(other, "digits", report(v2, 2))
    with pytest.raises(ProtocolError, match="no canary rollout"):
        svc.report_health(canary, "digits", report(v1, 1))
    with pytest.raises(ProtocolError, match="directly"):
        svc.report_health(identity(Role.DEVICE, "x", "s9"), "digits", report(v2, 2))

    receipt = svc.report_health(canary, "digits", report(v2, 2))
    assert receipt.accepted and "healthy" in receipt.reason
    view = svc.admin.get_model(ADMIN, v2)
    assert view.status == "production" and view.rollout is not None
    assert (view.rollout.stage, view.rollout.healthy, view.rollout.failed) == ("widened", 1, 0)
    widened = svc.production(other, "digits")
    assert (widened.sha256, widened.metadata["status"], seq(widened)) == (v2, "production", 3)
    assert svc.production(canary, "digits") == widened


def test_canary_halts_on_a_failed_report_and_the_canaries_go_back(tmp_path: Path) -> None:
    svc = service(tmp_path)
    _, v1 = commit_one_round(svc)
    v2 = second_version(svc, v1)
    canary, other = split(svc, v2)
    svc.report_health(canary, "digits", report(v2, 2, "accuracy", "d2"))
    view = svc.admin.get_model(ADMIN, v2)
    assert view.status == "rolled_back" and "canary rollout halted" in view.status_reason
    assert view.rollout is not None and view.rollout.stage == "halted"
    assert "failed the health check" in view.rollout.reason and view.rollout.failed == 1
    back = svc.production(canary, "digits")  # a NEWER manifest naming the older version
    assert (back.sha256, back.metadata["status"], seq(back)) == (v1, "production", 3)
    assert svc.production(other, "digits") == back
    assert svc.admin.get_model(ADMIN, v1).status == "production"


def test_canary_halts_when_the_hold_time_passes_without_enough_reports(tmp_path: Path) -> None:
    svc = service(tmp_path)
    _, v1 = commit_one_round(svc)
    v2 = second_version(svc, v1)
    split(svc, v2)
    assert isinstance(svc.clock, Clock)
    svc.clock.now += 50
    svc.tick()
    assert svc.admin.get_model(ADMIN, v2).status == "production"  # still within the hold time
    svc.clock.now += 51
    svc.tick()
    view = svc.admin.get_model(ADMIN, v2)
    assert view.status == "rolled_back" and view.rollout is not None
    assert "within the hold time" in view.rollout.reason


def test_an_admin_rollback_during_the_canary_halts_it(tmp_path: Path) -> None:
    svc = service(tmp_path)
    _, v1 = commit_one_round(svc)
    v2 = second_version(svc, v1)
    canary, _ = split(svc, v2)
    svc.admin.rollback_model(ADMIN, "digits")
    view = svc.admin.get_model(ADMIN, v2).rollout
    assert view is not None and view.stage == "halted" and "rolled back by admin" in view.reason
    assert svc.production(canary, "digits").sha256 == v1


def _gateway(tmp: Path, svc: CoordinatorService, gw: Identity) -> GatewayService:
    gateway = GatewayService(
        gateway_id=gw.name,
        site=str(gw.site),
        cache=ModelCache(
            tmp / f"{gw.name}-models",
            lambda sha: svc.model(gw, sha),
            fetch_release=lambda sha: svc.release(gw, sha),
            release_key=KEY.public_key(),
        ),
        outbox=Outbox(tmp / f"{gw.name}-outbox.sqlite"),
    )
    gateway.production_source = lambda job: svc.production(gw, job)
    gateway.health_sink = lambda job, r: svc.report_health(gw, job, r)
    return gateway


class ViaGateway:
    """A device's link to its gateway, in process (the gateway authenticates it as ``peer``)."""

    def __init__(self, gateway: GatewayService, peer: Identity) -> None:
        self.gateway, self.peer = gateway, peer
        self.replay: m.ModelRelease | None = None  # set: an attacker hands out this manifest

    def production(self, job_id: str) -> m.ModelRelease:
        return self.replay or self.gateway.production(self.peer, job_id)

    def model(self, sha256: str) -> bytes:
        return self.gateway.model(self.peer, sha256)

    def report_health(self, job_id: str, report: m.HealthReport) -> m.Receipt:
        return self.gateway.report_health(self.peer, job_id, report)


def _device(
    gateway: GatewayService, name: str, health: HealthCheck | None = None
) -> tuple[ProductionFollower, ViaGateway]:
    link = ViaGateway(gateway, identity(Role.DEVICE, name, gateway.site))
    follower = ProductionFollower(
        link,
        Predictor("digits_mlp", health),
        "digits",
        KEY.public_key(),
        health_sink=link.report_health,
    )
    return follower, link


def test_downgrade_and_replay_are_refused_by_gateway_and_device_and_rollback_works(
    tmp_path: Path,
) -> None:
    svc = service(tmp_path, policy=None)
    _, v1 = commit_one_round(svc)
    gateway = _gateway(tmp_path, svc, GW_A)
    follower, link = _device(gateway, "a1")
    assert follower.sync() == "digits/r1"
    old = svc.production(GW_A, "digits")  # a genuine, validly signed, now stale manifest
    second_version(svc, v1)
    assert follower.sync() == "digits/r2"

    gateway.production_source = lambda job: old  # the coordinator's answer replayed upstream
    kept = gateway.production(link.peer, "digits")
    assert kept.sha256 != v1 and seq(kept) == 2  # the gateway keeps serving the newer one
    link.replay = old  # an attacker between device and gateway
    assert follower.sync() == "digits/r2" and follower.downgrades_refused == 1
    assert follower.predictor.predict(np.zeros((1, 64), np.float32)).version == "digits/r2"

    link.replay = None
    gateway.production_source = lambda job: svc.production(GW_A, job)
    svc.admin.rollback_model(ADMIN, "digits")  # rollback: a newer manifest naming r1
    assert follower.sync() == "digits/r1"
    assert follower.guard.accepted("digits") is not None
    assert seq(gateway.production(link.peer, "digits")) == 3


def test_device_health_reports_travel_through_the_gateway_and_halt_a_bad_canary(
    tmp_path: Path,
) -> None:
    svc = service(tmp_path, CanaryPolicy(fraction=0.5, min_healthy=2, max_failures=0, hold_s=60))
    _, v1 = commit_one_round(svc)
    gateways = {gw.name: _gateway(tmp_path, svc, gw) for gw in (GW_A, GW_B)}
    devices = {name: _device(gw, f"{name}-d")[0] for name, gw in gateways.items()}
    assert {f.sync() for f in devices.values()} == {"digits/r1"}
    v2 = second_version(svc, v1)
    canary, other = split(svc, v2)
    # a canary device whose local holdout the new version fails (accuracy floor above 100 %)
    x = np.zeros((8, 64), np.float32)
    bad = HealthCheck(holdout_x=x, holdout_y=np.zeros(8, np.int64), min_accuracy=1.01)
    follower, _ = _device(gateways[canary.name], "c-bad", bad)
    follower.guard.accept(read_manifest(svc.production(other, "digits"), KEY.public_key()))

    assert devices[other.name].sync() == "digits/r1"  # not a canary: keeps r1
    assert devices[canary.name].sync() == "digits/r2"  # canary: loads r2, reports it healthy
    view = svc.admin.get_model(ADMIN, v2).rollout
    assert view is not None and (view.stage, view.healthy) == ("canary", 1)

    assert follower.sync() is None  # r2 fails its holdout check: refused and reported
    view = svc.admin.get_model(ADMIN, v2).rollout
    assert view is not None and (view.stage, view.failed) == ("halted", 1)
    assert devices[canary.name].sync() == "digits/r1"  # the canaries go back
    assert devices[other.name].sync() == "digits/r1"
    assert svc.admin.get_model(ADMIN, v2).status == "rolled_back"


def test_models_served_are_counted_by_what_the_version_is(tmp_path: Path) -> None:
    """``fedge_models_served_total{version}``: the open round's model, the production and the
    canary release, anything else; at the coordinator and at a gateway (one process here, so
    both count under the process's tier). An admin's download is not the fleet's."""
    metrics = setup_metrics("coordinator", "coord", environ={})

    def served(version: str) -> float:
        return sum(
            s.value
            for family in text_string_to_metric_families(metrics.render().decode())
            for s in family.samples
            if s.name == "fedge_models_served_total" and s.labels["version"] == version
        )

    try:
        svc = service(tmp_path)
        svc.admin.create_job(ADMIN, spec())
        checkin(svc, GW_A)
        svc.tick()
        initial = svc.store.get_job("digits").model_sha256 or ""
        svc.model(GW_A, initial)  # round 1 trains from it: no release names it
        assert served("round") == 1
        svc.model(ADMIN, initial)  # an admin looking: not counted
        assert served("round") == 1
        pspec = ParamSpec.of(model_params(svc, initial))
        checkin(svc, GW_A)
        payload = partial_payload(GW_A, "digits", 1, device_updates(pspec, ["a1", "a2"], 1))
        assert svc.submit_partial(GW_A, "digits", 1, payload).accepted
        assert isinstance(svc.clock, Clock)
        svc.clock.now += 91
        svc.tick()  # round 1 commits; the gate makes it production (manifest 1)
        v1 = svc.admin.get_job(ADMIN, "digits").rounds[0].model_sha256 or ""
        checkin(svc, GW_B)
        v2 = second_version(svc, v1)
        canary, other = split(svc, v2)
        svc.model(canary, v2)
        svc.model(other, v1)
        svc.model(other, initial)  # neither released nor an open round's model any more
        assert (served("canary"), served("production"), served("other")) == (1, 1, 1)

        follower, _ = _device(_gateway(tmp_path, svc, canary), "c1")
        assert follower.sync() == "digits/r2"  # gw fetches it (1), then serves its device (1)
        assert served("canary") == 3
    finally:
        shutdown_metrics()
