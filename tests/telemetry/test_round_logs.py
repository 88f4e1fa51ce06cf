"""Every log line of a round carries its job, round and trace id -- with tracing off (the default).

A real coordinator service (SQLite, real model payloads) and a real gateway service with its
uplink, joined in process (the uplink calls the coordinator service directly: no HTTP), run one
round: devices check in at the gateway, one reports, one never does; the gateway closes the
round and delivers its partial; the coordinator commits. Every record that the coordinator's and
the gateway's code logs meanwhile is stamped with the job, the round and the round's trace id.
The API app's middleware does the same for requests that arrive with a ``traceparent``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from tests.coordinator.helpers import ADMIN, GW_A, Clock, make_service, spec
from tests.gateway.conftest import make_update_payload

from fedge.coordinator import CoordinatorService
from fedge.core.params import ParamSpec
from fedge.core.serde import decode_params
from fedge.gateway.cache import ModelCache
from fedge.gateway.service import GatewayService
from fedge.gateway.uplink import Uplink
from fedge.identity import Identity, Role
from fedge.storage.outbox import Outbox
from fedge.telemetry.http import TraceContextMiddleware
from fedge.telemetry.logs import ContextFilter
from fedge.telemetry.tracing import shutdown_tracing, tracing_enabled
from fedge.transport import messages as m

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class _Records(logging.Handler):
    """Keeps every fedge record, stamped as a role process's handler stamps it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(ContextFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def captured() -> Iterator[_Records]:
    logger = logging.getLogger("fedge")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class _InProcessLink:
    """The gateway's uplink, calling the coordinator service directly as gateway gw-a."""

    def __init__(self, svc: CoordinatorService) -> None:
        self.svc = svc

    def gateway_checkin(self, request: m.GatewayCheckIn) -> m.GatewayAssignments:
        return self.svc.gateway_checkin(GW_A, request)

    def model(self, sha256: str) -> bytes:
        return self.svc.model(GW_A, sha256)

    def submit_partial(self, job_id: str, round_number: int, payload: bytes) -> m.Receipt:
        return self.svc.submit_partial(GW_A, job_id, round_number, payload)

    def register_devices(self, request: m.DeviceCertificates) -> m.DeviceRegistration:
        return self.svc.register_devices(GW_A, request)


def _device(name: str) -> Identity:
    now = datetime.now(UTC)
    return Identity(Role.DEVICE, name, "s1", 7, now - timedelta(days=1), now + timedelta(days=1))


def _checkin(gateway: GatewayService, device: Identity) -> m.TaskAssignment | m.Wait:
    request = m.CheckInRequest(
        device_id=device.name, nonce=m.new_nonce(), eligibility=m.Eligibility(num_examples=20)
    )
    return gateway.checkin(device, request)


def test_every_log_line_of_a_round_carries_job_round_and_trace_id(tmp_path: Path) -> None:
    shutdown_tracing()
    assert not tracing_enabled()
    clock = Clock()
    svc = make_service(tmp_path, clock)
    svc.admin.create_job(ADMIN, spec(rounds=1, devices_per_round=2, min_devices=1))
    gateway = GatewayService(
        gateway_id=GW_A.name,
        site=str(GW_A.site),
        cache=ModelCache(tmp_path / "models", lambda sha: svc.model(GW_A, sha)),
        outbox=Outbox(tmp_path / "outbox.sqlite"),
        clock=clock,
    )
    uplink = Uplink(gateway, _InProcessLink(svc))
    d1, d2 = _device("d1"), _device("d2")

    with captured() as logs:
        for device in (d1, d2):  # seen at the site: the gateway reports 2 eligible devices
            assert isinstance(_checkin(gateway, device), m.Wait)
        uplink.checkin_once()
        svc.tick()  # the round opens
        live = svc.live_round("digits")
        assert live is not None and live.traceparent is not None  # a trace id, tracing off
        trace_id = live.traceparent.split("-")[1]
        uplink.checkin_once()  # the gateway takes its share and caches the model
        tasks = [_checkin(gateway, device) for device in (d1, d2)]
        assert all(isinstance(t, m.TaskAssignment) for t in tasks)
        params, _ = decode_params(gateway.model(d1, live.base_sha256))
        payload, _ = make_update_payload(ParamSpec.of(params), "d1", job="digits", rnd=1)
        assert gateway.submit_update(d1, "digits", 1, payload).accepted  # d2 never reports
        clock.now += 61  # past the training deadline: the gateway closes its round
        uplink.checkin_once()
        assert uplink.send_once()  # the partial reaches the coordinator
        svc.tick()  # and the round commits
        assert svc.live_round("digits") is None

    *of_round, finished = logs.records  # the job's own last line comes after its last round
    assert finished.getMessage() == "job digits completed: all 1 rounds committed"
    assert (finished.job, finished.round) == ("digits", None)  # type: ignore[attr-defined]
    messages = [r.getMessage() for r in of_round]
    for expected in ("open: quotas", "new round digits/1", "handed digits round 1 to d2",
                     "closed: 1 accepted", "delivered", "release manifest 1", "committed"):  # fmt: skip
        assert any(expected in text for text in messages), (expected, messages)
    for record in of_round:
        stamped = (getattr(record, "job", None), getattr(record, "round", None), record.trace_id)
        assert stamped == ("digits", 1, trace_id), (record.name, record.getMessage(), stamped)


def test_a_request_with_a_traceparent_logs_its_trace_id_while_tracing_is_off() -> None:
    shutdown_tracing()
    app = FastAPI()
    log = logging.getLogger("fedge.test.route")

    @app.post("/v1/jobs/{job}/rounds/{number}/updates")
    def update(job: str, number: int) -> dict[str, str]:
        log.info("update for %s/%d", job, number)
        return {}

    app.add_middleware(TraceContextMiddleware)
    with captured() as logs:
        client = TestClient(app)
        client.post("/v1/jobs/j/rounds/3/updates", headers={"traceparent": TP})
        client.post("/v1/jobs/j/rounds/4/updates")  # outside any trace: job and round only
    first, second = logs.records
    assert (first.job, first.round, first.trace_id) == ("j", 3, TP[3:35])  # type: ignore[attr-defined]
    assert first.span_id == TP[36:52]  # type: ignore[attr-defined]
    assert (second.job, second.round, second.trace_id) == ("j", 4, None)  # type: ignore[attr-defined]
