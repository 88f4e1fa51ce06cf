"""GatewayService without HTTP: admission, quota, round checks, streaming sums, exactly-once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.gateway.conftest import identity, make_update_payload

from fedge.core.params import ParamSpec
from fedge.core.serde import decode_arrays
from fedge.errors import AuthorizationError, ProtocolError, UnavailableError, ValidationError
from fedge.gateway.cache import ModelCache
from fedge.gateway.service import GatewayService, partial_key
from fedge.gateway.uplink import Uplink
from fedge.identity import Role
from fedge.storage.outbox import Outbox
from fedge.transport.messages import (
    CheckInRequest,
    DeviceCertificates,
    DeviceRegistration,
    Eligibility,
    GatewayAssignments,
    GatewayCheckIn,
    HealthReport,
    Receipt,
    RoundAssignment,
    TaskAssignment,
    Wait,
    new_nonce,
)
from fedge.transport.replay import ReplayGuard
from fedge.transport.reports import ReportQueue, refusal_report

MakeAssignment = Callable[..., RoundAssignment]


class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class FakeCoordinator:
    """The coordinator side of the uplink, in process: dedups partials by (job, round, gateway)."""

    def __init__(self, models: dict[str, bytes], assignments: list[RoundAssignment]) -> None:
        self.models = models
        self.assignments = assignments
        self.partials: dict[tuple[str, int, str], bytes] = {}
        self.model_requests = 0
        self.up = True
        self.lose_receipts = 0  # accept, then fail as if the answer were lost
        self.certificates: list[str] = []  # what the gateway registered (base64 DER)
        self.health: list[tuple[str, HealthReport]] = []  # refusals the gateway reported

    def report_health(self, job_id: str, report: HealthReport) -> Receipt:
        if not self.up:
            raise UnavailableError("coordinator unreachable")
        self.health.append((job_id, report))
        return Receipt(accepted=True)

    def gateway_checkin(self, request: GatewayCheckIn) -> GatewayAssignments:
        if not self.up:
            raise UnavailableError("coordinator unreachable")
        return GatewayAssignments(assignments=self.assignments, retry_after_s=1.0)

    def model(self, sha256: str) -> bytes:
        if not self.up:
            raise UnavailableError("coordinator unreachable")
        self.model_requests += 1
        return self.models[sha256]

    def register_devices(self, request: DeviceCertificates) -> DeviceRegistration:
        if not self.up:
            raise UnavailableError("coordinator unreachable")
        self.certificates += request.certificates
        return DeviceRegistration()

    def submit_partial(self, job_id: str, round_number: int, payload: bytes) -> Receipt:
        if not self.up:
            raise UnavailableError("coordinator unreachable")
        _, meta = decode_arrays(payload, allowed_dtypes=frozenset({"F32"}))
        key = (job_id, round_number, meta["gateway"])
        duplicate = key in self.partials
        self.partials.setdefault(key, payload)
        if self.lose_receipts:
            self.lose_receipts -= 1
            raise UnavailableError("connection reset before the receipt arrived")
        return Receipt(accepted=True, duplicate=duplicate)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def coordinator(model_sha: str, model_payload: bytes) -> FakeCoordinator:
    return FakeCoordinator({model_sha: model_payload}, [])


def make_service(tmp_path: Path, coordinator: FakeCoordinator, clock: Clock) -> GatewayService:
    return GatewayService(
        gateway_id="gw-a",
        site="site-a",
        cache=ModelCache(tmp_path / "models", coordinator.model),
        outbox=Outbox(tmp_path / "outbox.sqlite"),
        replay=ReplayGuard(),
        clock=clock,
    )


@pytest.fixture
def service(tmp_path: Path, coordinator: FakeCoordinator, clock: Clock) -> GatewayService:
    return make_service(tmp_path, coordinator, clock)


def open_rounds(service: GatewayService, answer: GatewayAssignments) -> None:
    """What the uplink loop does: take the assignments, then prefetch their models."""
    for a in service.apply_assignments(answer):
        service.cache.get(a.model_sha256)


def test_no_round_is_handed_out_before_its_model_is_cached(
    service: GatewayService, assignment: Callable[..., RoundAssignment]
) -> None:
    service.apply_assignments(GatewayAssignments(assignments=[assignment()], retry_after_s=1))
    assert isinstance(checkin(service, "d1"), Wait)  # the uplink has not fetched the model yet
    service.cache.get(assignment().model_sha256)
    assert isinstance(checkin(service, "d1"), TaskAssignment)


def checkin(service: GatewayService, device: str, **kw: object) -> TaskAssignment | Wait:
    req = CheckInRequest(
        device_id=str(kw.pop("as_id", device)),
        nonce=str(kw.pop("nonce", new_nonce())),
        eligibility=Eligibility(num_examples=20),
        labels=kw.pop("labels", {}),  # type: ignore[arg-type]
    )
    return service.checkin(identity(device, site=str(kw.pop("site", "site-a"))), req)


def submit(service: GatewayService, spec: ParamSpec, device: str, **kw: object) -> Receipt:
    payload, _ = make_update_payload(spec, device, **kw)  # type: ignore[arg-type]
    return service.submit_update(identity(device), "job1", 1, payload)


def test_quota_enforced_and_retries_do_not_use_it(
    service: GatewayService, assignment: MakeAssignment
) -> None:
    open_rounds(service, GatewayAssignments(assignments=[assignment(quota=2)], retry_after_s=1))
    first = checkin(service, "d1")
    assert isinstance(first, TaskAssignment) and first.round == 1
    assert isinstance(checkin(service, "d2"), TaskAssignment)
    assert isinstance(checkin(service, "d3"), Wait)
    again = checkin(service, "d1")  # its answer was lost: the same round, no new slot
    assert isinstance(again, TaskAssignment) and again.job_id == "job1"
    assert isinstance(checkin(service, "d4"), Wait)


def test_label_selector(service: GatewayService, assignment: MakeAssignment) -> None:
    a = assignment(selector={"kind": "camera"})
    open_rounds(service, GatewayAssignments(assignments=[a], retry_after_s=1))
    assert isinstance(checkin(service, "d1", labels={"kind": "phone"}), Wait)
    assert isinstance(checkin(service, "d2", labels={"kind": "camera"}), TaskAssignment)


def test_admission(service: GatewayService, assignment: MakeAssignment, spec: ParamSpec) -> None:
    open_rounds(service, GatewayAssignments(assignments=[assignment()], retry_after_s=1))
    with pytest.raises(AuthorizationError, match="site"):
        checkin(service, "d9", site="site-b")
    with pytest.raises(AuthorizationError, match="may not act as"):
        checkin(service, "d1", as_id="d2")
    admin = identity("root", Role.ADMIN, None)
    with pytest.raises(AuthorizationError):
        service.submit_update(admin, "job1", 1, b"")
    nonce = new_nonce()
    checkin(service, "d1", nonce=nonce)
    with pytest.raises(ProtocolError, match="replayed"):
        checkin(service, "d1", nonce=nonce)
    payload, _ = make_update_payload(spec, "d9")
    with pytest.raises(AuthorizationError):
        service.submit_update(identity("d9", site="site-b"), "job1", 1, payload)


def test_unknown_stale_and_unhanded_rounds(
    service: GatewayService, assignment: MakeAssignment, spec: ParamSpec, clock: Clock
) -> None:
    open_rounds(service, GatewayAssignments(assignments=[assignment()], retry_after_s=1))
    assert isinstance(checkin(service, "d1"), TaskAssignment)
    payload, _ = make_update_payload(spec, "d1", rnd=7)
    with pytest.raises(ProtocolError, match="not open"):
        service.submit_update(identity("d1"), "job1", 7, payload)
    with pytest.raises(AuthorizationError, match="not handed"):
        submit(service, spec, "d2")
    clock.now += 61  # past the training deadline
    with pytest.raises(ProtocolError, match="closed"):
        submit(service, spec, "d1")


def test_bad_updates_refused_and_partial_is_the_weighted_sum(
    service: GatewayService, assignment: MakeAssignment, spec: ParamSpec
) -> None:
    open_rounds(service, GatewayAssignments(assignments=[assignment(quota=3)], retry_after_s=1))
    for d in ("d1", "d2", "d3"):
        assert isinstance(checkin(service, d), TaskAssignment)
    expected = {n: np.zeros(s) for n, s in zip(spec.names, spec.shapes, strict=True)}
    nonce = new_nonce()
    payload, delta = make_update_payload(spec, "d1", num_examples=4, seed=1, nonce=nonce)
    assert service.submit_update(identity("d1"), "job1", 1, payload).accepted
    for n in spec.names:
        expected[n] += 4 * delta[n].astype(np.float64)
    resent = service.submit_update(identity("d1"), "job1", 1, payload)  # lost receipt: resend
    assert resent.accepted and resent.duplicate
    with pytest.raises(ProtocolError):  # a second, different update from the same device
        submit(service, spec, "d1", seed=9)
    bad, _ = make_update_payload(spec, "d2", num_examples=6, seed=2)
    with pytest.raises(ValidationError):
        service.submit_update(identity("d2"), "job1", 1, bad[:-10])  # truncated
    payload3, delta3 = make_update_payload(spec, "d3", num_examples=6, seed=3)
    assert service.submit_update(identity("d3"), "job1", 1, payload3).accepted
    for n in spec.names:
        expected[n] += 6 * delta3[n].astype(np.float64)
    assert service.close_due_rounds() == []  # d2 has not reported: not complete yet
    ok2, delta2 = make_update_payload(spec, "d2", num_examples=2, seed=4)
    assert service.submit_update(identity("d2"), "job1", 1, ok2).accepted
    for n in spec.names:
        expected[n] += 2 * delta2[n].astype(np.float64)
    assert service.close_due_rounds() == [partial_key("job1", 1)]  # complete: reported at once
    (item,) = service.outbox.due(service.clock())
    arrays, meta = decode_arrays(item.payload, allowed_dtypes=frozenset({"F32"}))
    assert float(meta["total_weight"]) == 12.0 and meta["num_accepted"] == "3"
    for n in spec.names:
        np.testing.assert_allclose(arrays[n], expected[n], rtol=2**-24)  # float32 on the wire
    with pytest.raises(ProtocolError):  # closed: nothing more is accepted
        submit(service, spec, "d3", seed=5)


def test_deadline_closes_an_incomplete_round(
    service: GatewayService, assignment: MakeAssignment, spec: ParamSpec, clock: Clock
) -> None:
    open_rounds(service, GatewayAssignments(assignments=[assignment(quota=5)], retry_after_s=1))
    checkin(service, "d1")
    assert submit(service, spec, "d1", num_examples=3).accepted
    assert service.close_due_rounds() == []
    clock.now += 61
    assert service.close_due_rounds() == [partial_key("job1", 1)]
    assert service.close_due_rounds() == []  # once


def test_model_fetched_once_for_the_site(
    service: GatewayService,
    coordinator: FakeCoordinator,
    assignment: MakeAssignment,
    model_sha: str,
    model_payload: bytes,
) -> None:
    open_rounds(service, GatewayAssignments(assignments=[assignment()], retry_after_s=1))
    for d in ("d1", "d2", "d3"):
        assert service.model(identity(d), model_sha) == model_payload
    assert coordinator.model_requests == 1
    with pytest.raises(AuthorizationError):
        service.model(identity("x", site="site-b"), model_sha)


def test_partial_delivered_exactly_once_across_outage_and_restart(
    tmp_path: Path,
    coordinator: FakeCoordinator,
    clock: Clock,
    assignment: MakeAssignment,
    spec: ParamSpec,
) -> None:
    coordinator.assignments = [assignment(quota=2)]
    service = make_service(tmp_path, coordinator, clock)
    uplink = Uplink(service, coordinator)
    uplink.checkin_once()
    assert coordinator.model_requests == 1  # pre-fetched for the site
    for d in ("d1", "d2"):
        checkin(service, d)
        assert submit(service, spec, d, seed=len(d)).accepted
    coordinator.up = False
    uplink.checkin_once()  # uplink down: the round still closes into the outbox
    assert service.outbox.get(partial_key("job1", 1)) is not None
    assert not uplink.send_once()
    assert coordinator.partials == {}
    service.outbox.close()

    restarted = make_service(tmp_path, coordinator, clock)  # reopen the SQLite files
    coordinator.up = True
    uplink = Uplink(restarted, coordinator)
    uplink.checkin_once()  # the round is known closed: not handed out or reported again
    assert isinstance(checkin(restarted, "d3"), Wait)
    coordinator.lose_receipts = 1
    clock.now += 60  # past the retry backoff
    assert not uplink.send_once()  # delivered, but the receipt was lost
    assert list(coordinator.partials) == [("job1", 1, "gw-a")]
    clock.now += 60  # past the retry backoff
    assert uplink.send_once()  # resent: the coordinator answers "duplicate"
    assert uplink.send_once() and restarted.outbox.pending() == 0
    assert list(coordinator.partials) == [("job1", 1, "gw-a")]
    assert uplink.delivered == 1
    assert coordinator.model_requests == 1  # the restarted gateway reused its disk cache


def test_a_refusal_held_while_the_uplink_was_down_goes_at_the_next_check_in(
    tmp_path: Path, coordinator: FakeCoordinator, clock: Clock, model_sha: str
) -> None:
    reports = ReportQueue(coordinator.report_health)
    service = GatewayService(
        gateway_id="gw-a",
        site="site-a",
        cache=ModelCache(tmp_path / "models", coordinator.model, reports=reports),
        outbox=Outbox(tmp_path / "outbox.sqlite"),
        replay=ReplayGuard(),
        clock=clock,
    )
    uplink = Uplink(service, coordinator)
    coordinator.up = False
    reports.put("job1", refusal_report(model_sha, "release", "signature does not verify"))
    assert reports.pending() == 1 and coordinator.health == []
    uplink.checkin_once()  # still down: the report stays
    assert reports.pending() == 1
    coordinator.up = True
    uplink.checkin_once()  # no device asked for a model in between
    assert reports.pending() == 0
    [(job, report)] = coordinator.health
    assert (job, report.sha256, report.check) == ("job1", model_sha, "release")
