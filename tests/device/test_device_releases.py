"""The device verifies a model's release before it decodes or trains on it."""

from __future__ import annotations

import base64
import hashlib
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.gateway.conftest import identity

from fedge.core.params import from_module
from fedge.core.serde import encode_params
from fedge.device.agent import DeviceAgent
from fedge.device.backoff import Backoff
from fedge.device.collector import DemoCollector, device_share
from fedge.device.eligibility import AlwaysEligible
from fedge.device.store import LocalStore
from fedge.errors import UnavailableError, UnknownNameError
from fedge.gateway.cache import ModelCache
from fedge.gateway.service import GatewayService
from fedge.identity import Identity
from fedge.identity.signing import ReleaseSigningKey
from fedge.privacy import PrivacyLedger
from fedge.storage.outbox import Outbox
from fedge.tasks import get_task
from fedge.transport.messages import (
    CheckInRequest,
    GatewayAssignments,
    HealthReport,
    ModelRelease,
    Receipt,
    RoundAssignment,
    TaskAssignment,
    TrainingPlan,
    Wait,
)
from fedge.transport.releases import make_release, release_metadata
from fedge.transport.replay import ReplayGuard
from fedge.transport.reports import ReportQueue

TASK = "digits_mlp"
KEY = ReleaseSigningKey.generate()
OTHER = ReleaseSigningKey.generate()


@pytest.fixture(scope="module")
def model() -> tuple[bytes, str]:
    import torch

    torch.manual_seed(1)
    payload = encode_params(from_module(get_task(TASK).build_model()), {"kind": "model"})
    return payload, hashlib.sha256(payload).hexdigest()


class Link:
    """The device's wire, in process, with the payload and release open to tampering."""

    def __init__(self, service: GatewayService, peer: Identity) -> None:
        self.service, self.peer = service, peer
        self.alter_payload: Callable[[bytes], bytes] = lambda b: b
        self.alter_release: Callable[[ModelRelease], ModelRelease | None] = lambda r: r
        self.forwarded: list[tuple[str, HealthReport]] = []

    def checkin(self, request: CheckInRequest) -> TaskAssignment | Wait:
        return self.service.checkin(self.peer, request)

    def model(self, sha256: str) -> bytes:
        return self.alter_payload(self.service.model(self.peer, sha256))

    def release(self, sha256: str) -> ModelRelease:
        release = self.alter_release(self.service.release(self.peer, sha256))
        if release is None:
            raise UnknownNameError(f"model {sha256} has no release signature")
        return release

    def submit_update(self, job_id: str, round_number: int, payload: bytes) -> Receipt:
        return self.service.submit_update(self.peer, job_id, round_number, payload)

    def report_health(self, job_id: str, report: HealthReport) -> Receipt:
        return self.service.report_health(self.peer, job_id, report)


def setup(tmp_path: Path, model: tuple[bytes, str]) -> tuple[DeviceAgent, Link]:
    payload, sha = model
    release = make_release(KEY, sha, release_metadata("job1", 0, TASK, None))
    service = GatewayService(
        gateway_id="gw-a",
        site="site-a",
        cache=ModelCache(  # a gateway that passes releases on without checking them
            tmp_path / "models", {sha: payload}.__getitem__, fetch_release={sha: release}.get
        ),
        outbox=Outbox(tmp_path / "gw-outbox.sqlite"),
        replay=ReplayGuard(),
    )
    now = time.time()
    a = RoundAssignment(
        job_id="job1",
        round=1,
        task_name=TASK,
        model_sha256=sha,
        quota=2,
        training_deadline=now + 120,
        report_deadline=now + 150,
        plan=TrainingPlan(epochs=1, batch_size=10, lr=0.1),
    )
    service.apply_assignments(GatewayAssignments(assignments=[a], retry_after_s=1))
    forwarded: list[tuple[str, HealthReport]] = []  # what the gateway sends the coordinator
    service.health_sink = lambda job, r: (forwarded.append((job, r)), Receipt(accepted=True))[1]
    service.cache.get(a.model_sha256)  # the uplink prefetches before devices get the round
    store = LocalStore(tmp_path / "data.sqlite", retention_s=3600)
    x, y = device_share(TASK, 8, 0, seed=0)
    DemoCollector(store, x, y, rows_per_tick=len(y)).tick()
    link = Link(service, identity("dev0"))
    device = DeviceAgent(
        device_id="dev0",
        link=link,
        store=store,
        policy=AlwaysEligible(),
        ledger=PrivacyLedger(tmp_path / "privacy.sqlite", 10.0),
        outbox=Outbox(tmp_path / "outbox.sqlite"),
        backoff=Backoff(rng=random.Random(0)),
        release_key=KEY.public_key(),
    )
    link.forwarded = forwarded
    device.reports = ReportQueue(link.report_health)
    return device, link


def test_a_validly_signed_model_is_trained_on(tmp_path: Path, model: tuple[bytes, str]) -> None:
    device, _ = setup(tmp_path, model)
    assert device.step() == 0.0
    assert device.stats.delivered == 1 and device.stats.refused_models == 0


def _flip(r: ModelRelease) -> ModelRelease:
    sig = bytearray(base64.b64decode(r.signature))
    sig[-1] ^= 0x80
    return r.model_copy(update={"signature": base64.b64encode(bytes(sig)).decode()})


CASES: dict[str, tuple[Callable[[bytes], bytes], Callable[[ModelRelease], ModelRelease | None]]] = {
    "tampered artifact": (lambda b: b[:-4] + b"\x00\x00\x80\x7f", lambda r: r),
    "wrong signature": (lambda b: b, _flip),
    "another key": (lambda b: b, lambda r: make_release(OTHER, r.sha256, r.metadata)),
    "altered metadata": (
        lambda b: b,
        lambda r: r.model_copy(update={"metadata": {**r.metadata, "task": "mnist_2nn"}}),
    ),
    "unsigned": (lambda b: b, lambda r: None),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_device_refuses_and_reports(tmp_path: Path, model: tuple[bytes, str], case: str) -> None:
    device, link = setup(tmp_path, model)
    link.alter_payload, link.alter_release = CASES[case]
    device.step()
    assert device.stats.refused_models == 1, device.stats
    assert device.stats.delivered == 0 and device.outbox.pending() == 0
    assert "refus" in device.stats.last_reason or "unsigned" in device.stats.last_reason
    # reported, not only counted: through the gateway, which names the device, upstream
    ((job, report),) = link.forwarded
    assert (job, report.device_id, report.check) == ("job1", "dev0", "release")
    assert report.sequence is None and "round 1" in report.reason
    assert device.reports is not None and device.reports.pending() == 0


def test_a_refusal_the_gateway_cannot_take_is_sent_at_the_next_step(
    tmp_path: Path, model: tuple[bytes, str]
) -> None:
    device, link = setup(tmp_path, model)
    link.alter_release = lambda r: None  # unsigned
    down = [True]

    def flaky(job: str, report: HealthReport) -> Receipt:
        if down[0]:
            raise UnavailableError("gateway unreachable")
        return link.report_health(job, report)

    assert device.reports is not None
    device.reports.sink = flaky
    device.step()
    assert device.stats.refused_models == 1 and device.reports.pending() == 1
    assert link.forwarded == []
    down[0] = False
    device.step()
    assert device.reports.pending() == 0 and len(link.forwarded) == 1
