"""Devices serve the production version, follow promotions and roll back with the coordinator."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedge.coordinator import CoordinatorService
from fedge.device.follower import ProductionFollower, manifest_key
from fedge.device.predictor import Predictor
from fedge.gateway.cache import ModelCache
from fedge.gateway.service import GatewayService
from fedge.identity import Role
from fedge.storage.outbox import Outbox
from fedge.transport.messages import ModelRelease

from .conftest import identity
from .helpers import ADMIN
from .test_registry import add_version
from .test_releases import KEY, OTHER, commit_one_round, signed_service

DEVICE = identity(Role.DEVICE, "dev1", "s1")
GATEWAY = identity(Role.GATEWAY, "gw-a", "s1")


class DirectLink:
    """A device talking to the coordinator service in process (it is the device's gateway)."""

    def __init__(self, svc: CoordinatorService) -> None:
        self.svc, self.downloads, self.tamper, self.foreign = svc, 0, False, False

    def production(self, job_id: str) -> ModelRelease:
        pointer = self.svc.production(DEVICE, job_id)
        if self.foreign:  # a release by another key for the same model and metadata
            from fedge.transport.releases import make_release

            return make_release(OTHER, pointer.sha256, pointer.metadata)
        return pointer

    def model(self, sha256: str) -> bytes:
        self.downloads += 1
        data = self.svc.model(DEVICE, sha256)
        return data[:-1] + bytes([data[-1] ^ 1]) if self.tamper else data


def test_follow_promotion_rollback_and_refusals(tmp_path: Path) -> None:
    svc = signed_service(tmp_path)
    _, v1 = commit_one_round(svc)
    link = DirectLink(svc)
    predictor = Predictor("digits_mlp")
    follower = ProductionFollower(
        link,
        predictor,
        "digits",
        KEY.public_key(),
        health_sink=lambda job, report: svc.report_health(DEVICE, job, report),
    )
    assert follower.sync() == "digits/r1"
    x = np.zeros((2, 64), dtype=np.float32)
    assert predictor.predict(x).version == "digits/r1"

    acc = svc.admin.get_model(ADMIN, v1).metrics["accuracy"]
    add_version(svc, v1, 2, acc + 0.01, 1.01)  # the gate promotes it
    assert follower.sync() == "digits/r2" and link.downloads == 2

    svc.admin.rollback_model(ADMIN, "digits")  # coordinator rolls back: r1 is production again
    assert follower.sync() == "digits/r1"
    assert link.downloads == 2  # r1 was still kept: rolled back without a download
    assert predictor.predict(x).version == "digits/r1"

    v2b = svc.store.list_model_versions("digits")[-1].sha256
    v3 = add_version(svc, v1, 3, acc + 0.02, 1.02)
    link.tamper = True
    assert follower.sync() == "digits/r1"  # tampered download refused; r1 stays
    # remembered by the manifest that named it, and reported to the coordinator
    assert manifest_key(svc.production(DEVICE, "digits")) in follower.refused
    assert predictor.version == "digits/r1"
    assert follower.sync() == "digits/r1" and link.downloads == 3  # not fetched again
    assert v2b != v3
    (refusal,) = svc.admin.get_model(ADMIN, v3).refusals
    assert (refusal.reporter, refusal.tier, refusal.via, refusal.check) == (
        "dev1",
        "device",
        None,
        "release",
    )


def test_foreign_signature_and_unsigned_production_are_refused(tmp_path: Path) -> None:
    svc = signed_service(tmp_path)
    commit_one_round(svc)
    link = DirectLink(svc)
    link.foreign = True
    predictor = Predictor("digits_mlp")
    follower = ProductionFollower(link, predictor, "digits", KEY.public_key())
    assert follower.sync() is None and len(follower.refused) == 1

    (tmp_path / "u").mkdir()
    unsigned = signed_service(tmp_path / "u", key=None)
    commit_one_round(unsigned)
    follower = ProductionFollower(
        DirectLink(unsigned), Predictor("digits_mlp"), "digits", KEY.public_key()
    )
    assert follower.sync() is None
    assert "unsigned" in next(iter(follower.refused.values()))


def test_through_a_verifying_gateway(tmp_path: Path) -> None:
    svc = signed_service(tmp_path)
    _, v1 = commit_one_round(svc)
    gateway = GatewayService(
        gateway_id="gw-a",
        site="s1",
        cache=ModelCache(
            tmp_path / "gw-models",
            lambda sha: svc.model(GATEWAY, sha),
            fetch_release=lambda sha: svc.release(GATEWAY, sha),
            release_key=KEY.public_key(),
        ),
        outbox=Outbox(tmp_path / "gw-outbox.sqlite"),
    )
    gateway.production_source = lambda job: svc.production(GATEWAY, job)

    class ViaGateway:
        def production(self, job_id: str) -> ModelRelease:
            return gateway.production(DEVICE, job_id)

        def model(self, sha256: str) -> bytes:
            return gateway.model(DEVICE, sha256)

    predictor = Predictor("digits_mlp")
    follower = ProductionFollower(ViaGateway(), predictor, "digits", KEY.public_key())
    assert follower.sync() == "digits/r1"
    assert gateway.cache.has(v1) and gateway.cache.release(v1) is not None
