"""Metrics in one process: instruments, Prometheus rendering, the traffic middleware, OTLP export."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from tests.coordinator.conftest import identity
from tests.coordinator.helpers import (
    ADMIN,
    GW_A,
    GW_B,
    Clock,
    checkin,
    device_updates,
    make_service,
    model_params,
    partial_payload,
    spec,
    update_payload,
)

from fedge.coordinator.dropouts import count_dropouts
from fedge.coordinator.rounds import Round
from fedge.coordinator.selection import DIRECT
from fedge.core.params import ParamSpec
from fedge.errors import ConfigError
from fedge.identity import Identity, Role
from fedge.telemetry import metrics as metrics_module
from fedge.telemetry.metrics import (
    REFUSAL_REASONS,
    Metrics,
    metrics_router,
    reason_for_status,
    record_model_served,
    record_refused,
    record_round_closed,
    record_secagg_phase,
    record_update_norm,
    route_group,
    setup_metrics,
    shutdown_metrics,
)
from fedge.telemetry.traffic import TrafficMetricsMiddleware
from fedge.transport import messages as m
from fedge.transport.errors import REFUSAL_TABLE, install_error_handlers
from fedge.transport.replay import ReplayGuard


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    current = setup_metrics("coordinator", "coord", environ={})
    try:
        yield current
    finally:
        shutdown_metrics()


def samples(metrics: Metrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample the Prometheus text holds now, by sample name."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for s in family.samples:
            found.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return found


def total(metrics: Metrics, name: str, **labels: str) -> float:
    """Σ of ``name``'s samples whose labels include ``labels``."""
    return sum(v for got, v in samples(metrics).get(name, []) if labels.items() <= got.items())


@pytest.mark.parametrize(
    ("path", "group"),
    [
        ("/v1/checkin", "checkin"),
        ("/v1/jobs/j/rounds/3/updates", "updates"),
        ("/v1/jobs/j/rounds/3/partials", "partials"),
        ("/v1/gateway/jobs/j/rounds/3/secagg/inbox/dev-1", "secagg"),
        ("/v1/models/" + "a" * 64, "models"),
        ("/v1/models/" + "a" * 64 + "/release", "releases"),
        ("/v1/admin/models/" + "a" * 64 + "/payload", "admin"),
        ("/v1/gateway/checkin", "gateway_checkin"),
        ("/v1/jobs/j/production", "production"),
        ("/v1/jobs/updates/production", "production"),  # a job may be named like a route
        ("/v1/jobs/j/health", "health_reports"),
        ("/v1/health", "health"),
        ("/v1/gateway/devices", "gateway_devices"),
        ("/v1/jobs/j/rounds/2/secagg/join", "secagg"),
        ("/nowhere", "other"),
    ],
)
def test_route_groups_are_bounded_labels(path: str, group: str) -> None:
    assert route_group(path) == group


def test_refusal_reasons_from_the_status_alone() -> None:
    assert [reason_for_status(s) for s in (200, 401, 403, 409, 413, 422, 429, 418, 503)] == [
        None, "unauthenticated", "forbidden", "conflict", "oversized", "invalid", "rate_limited",
        "other", None,
    ]  # fmt: skip
    assert {reason_for_status(s) for s in range(400, 500)} <= set(REFUSAL_REASONS)


def test_refusal_labels_are_a_fixed_set(metrics: Metrics) -> None:
    record_refused("replay")
    record_refused("a reason nobody listed")  # counted, as "other": the label stays bounded
    record_model_served("canary")
    record_model_served("3f2a9c")  # not a kind of version: "other"
    assert total(metrics, "fedge_requests_refused_total", reason="replay") == 1
    assert total(metrics, "fedge_requests_refused_total", reason="other") == 1
    assert total(metrics, "fedge_models_served_total", version="canary") == 1
    assert total(metrics, "fedge_models_served_total", version="other") == 1
    assert {reason for _, _, reason in REFUSAL_TABLE} <= set(REFUSAL_REASONS)


def test_unknown_tier_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown tier"):
        setup_metrics("device", "dev-1", environ={})


def test_round_transitions_become_counters_and_durations(metrics: Metrics) -> None:
    committed = Round("job1", 1)
    committed.open({"gw-a": 2}, training_deadline=10.0, report_deadline=20.0)
    committed.start_training()
    committed.begin_aggregation()
    committed.commit()
    abandoned = Round("job1", 2)
    abandoned.open({"gw-a": 2}, training_deadline=10.0, report_deadline=20.0)
    abandoned.abandon("nobody came")

    assert total(metrics, "fedge_rounds_committed_total", job="job1") == 1
    assert total(metrics, "fedge_rounds_abandoned_total", job="job1") == 1
    assert total(metrics, "fedge_round_duration_seconds_count", outcome="committed") == 1
    assert total(metrics, "fedge_round_duration_seconds_count", outcome="abandoned") == 1
    for phase, count in (("configuring", 2), ("training", 1), ("aggregating", 1)):
        assert total(metrics, "fedge_round_phase_duration_seconds_count", phase=phase) == count
    text = metrics.render().decode()
    assert "# TYPE fedge_rounds_committed_total counter" in text
    assert "# TYPE fedge_round_duration_seconds histogram" in text


def test_secagg_phases_and_dropouts(metrics: Metrics) -> None:
    record_secagg_phase("share_keys", 1.5, missing=2)
    record_secagg_phase("masked_input", 0.5, missing=0)
    assert total(metrics, "fedge_dropouts_total", phase="share_keys") == 2
    assert total(metrics, "fedge_dropouts_total", phase="masked_input") == 0
    assert total(metrics, "fedge_secagg_phase_duration_seconds_sum") == pytest.approx(2.0)


def test_update_norms_and_clipping(metrics: Metrics) -> None:
    record_update_norm({"w": np.full(4, 0.5, np.float32), "b": np.zeros(2, np.float32)}, 1.0)
    record_update_norm({"w": np.full(4, 0.1, np.float32)}, 1.0)
    record_update_norm({"w": np.full(4, 3.0, np.float32)}, None)  # no clipping asked
    assert total(metrics, "fedge_update_norm_count", tier="coordinator") == 3
    assert total(metrics, "fedge_update_norm_sum") == pytest.approx(1.0 + 0.2 + 6.0, rel=1e-6)
    assert total(metrics, "fedge_updates_clipped_total") == 1


def _update(norm: float) -> dict[str, np.ndarray]:
    return {"w": np.array([norm, 0.0], np.float32)}


def test_a_rounds_clipped_fraction_is_published_when_it_closes(metrics: Metrics) -> None:
    fraction = "fedge_round_clipped_fraction"
    for norm in (1.0, 1.0, 0.2, 1.0):  # three of four at C = 1: clipped
        record_update_norm(_update(norm), 1.0, "job1", 1)
    record_update_norm(_update(5.0), None, "job2", 1)  # no central DP: no fraction
    assert fraction not in samples(metrics)  # nothing until the round closes
    record_round_closed("job1", 1)
    record_round_closed("job2", 1)
    assert samples(metrics)[fraction] == [({"job": "job1", "tier": "coordinator"}, 0.75)]

    record_update_norm(_update(0.1), 1.0, "job1", 2)  # round 2 runs: round 1's still shows
    assert total(metrics, fraction, job="job1") == 0.75
    record_update_norm(_update(1.0), 1.0, "job1", 1)  # late for round 1: still counted there
    assert total(metrics, fraction, job="job1") == pytest.approx(0.8)
    record_round_closed("job1", 2)
    assert total(metrics, fraction, job="job1") == 0.0
    record_round_closed("job1", 1)  # an older round closing again changes nothing
    record_update_norm(_update(1.0), 1.0, "job1", 1)  # nor does a straggler of an older round
    assert total(metrics, fraction, job="job1") == 0.0
    record_round_closed("job1", 3)  # a round without plain updates (secure, all dropped out)
    assert total(metrics, fraction, job="job1") == 0.0
    text = metrics.render().decode()
    assert "# TYPE fedge_round_clipped_fraction gauge" in text


def test_the_coordinators_rounds_close_their_clipped_fraction(metrics: Metrics) -> None:
    """Direct devices' updates at the coordinator: the round's commit publishes the fraction."""
    rnd = Round("job1", 1)
    rnd.open({"direct": 2}, training_deadline=10.0, report_deadline=20.0)
    rnd.start_training()
    record_update_norm(_update(0.5), 0.5, "job1", 1)
    record_update_norm(_update(0.5), 0.5, "job1", 1)
    rnd.begin_aggregation()
    rnd.commit()
    assert total(metrics, "fedge_round_clipped_fraction", job="job1") == 1.0
    assert total(metrics, "fedge_updates_clipped_total") == 2


def test_clipping_of_rounds_that_never_close_is_forgotten(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_module, "_OPEN_ROUNDS", 3)
    for number in range(1, 6):
        record_update_norm(_update(1.0), 1.0, "job1", number)
    assert len(metrics._clipping) == 3  # the oldest two were dropped
    record_round_closed("job1", 1)
    assert "fedge_round_clipped_fraction" not in samples(metrics)
    record_round_closed("job1", 5)
    assert total(metrics, "fedge_round_clipped_fraction", job="job1") == 1.0


def test_record_calls_are_quiet_while_metrics_are_off() -> None:
    shutdown_metrics()
    rnd = Round("job1", 1)
    rnd.open({"gw-a": 1}, training_deadline=1.0, report_deadline=2.0)  # no error, no state
    record_secagg_phase("unmask", 1.0, 3)
    app = FastAPI()
    app.include_router(metrics_router())
    answer = TestClient(app).get("/metrics")
    assert answer.status_code == 503


def test_observed_gauges_are_read_at_scrape_time(metrics: Metrics) -> None:
    online = [3.0]
    metrics.observe(
        "fedge.devices.online", "{device}", "online", lambda: [(online[0], {"site": "a"})]
    )
    assert total(metrics, "fedge_devices_online", site="a") == 3
    online[0] = 5.0
    assert total(metrics, "fedge_devices_online", site="a") == 5


def test_a_failing_gauge_is_logged_not_raised(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> list[tuple[float, dict[str, str]]]:
        raise RuntimeError("database gone")

    metrics.observe("fedge.devices.eligible", "{device}", "eligible", broken)
    assert "fedge_devices_eligible" not in samples(metrics)
    assert "could not be read" in caplog.text


def test_traffic_middleware_counts_bytes_refusals_and_models(metrics: Metrics) -> None:
    app = FastAPI()

    @app.post("/v1/jobs/{job}/rounds/{n}/updates")
    async def update(request: Request) -> dict[str, int]:
        return {"got": len(await request.body())}

    @app.get("/v1/models/{sha}")
    def model(sha: str) -> dict[str, str]:
        return {"sha": sha}

    @app.get("/v1/admin/jobs")
    def admin() -> None:
        raise HTTPException(403, "admins only")

    guard = ReplayGuard()

    @app.post("/v1/checkin")
    def replayed() -> None:
        guard.check("dev-1", "n" * 32)  # the second time: a replay (409)

    install_error_handlers(app)
    app.add_middleware(TrafficMetricsMiddleware)
    client = TestClient(app)
    sent = client.post("/v1/jobs/j/rounds/1/updates", content=b"x" * 1000)
    assert sent.json() == {"got": 1000}
    assert client.get("/v1/models/abc").status_code == 200
    assert client.get("/v1/admin/jobs").status_code == 403
    assert client.get("/v1/nothing-here").status_code == 404
    assert client.post("/v1/checkin").status_code == 200
    assert client.post("/v1/checkin").status_code == 409

    received = total(metrics, "fedge_http_received_bytes_total", route="updates")
    assert received == 1000
    assert total(metrics, "fedge_http_sent_bytes_total", route="updates") == len(sent.content)
    assert total(metrics, "fedge_requests_refused_total", reason="forbidden") == 1
    assert total(metrics, "fedge_requests_refused_total", reason="not_found") == 1
    assert total(metrics, "fedge_requests_refused_total", reason="replay") == 1  # not "conflict"
    assert total(metrics, "fedge_requests_refused_total", reason="conflict") == 0
    assert "fedge_models_served_total" not in samples(metrics)  # the services count those


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that keeps what it is sent (path, content type, body size)."""

    received: list[tuple[str, str, int]] = []  # noqa: RUF012

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.received.append((self.path, self.headers.get("content-type", ""), len(body)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_otlp_export_when_an_endpoint_is_set() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        current = setup_metrics("gateway", "gw-a", environ={"OTEL_EXPORTER_OTLP_ENDPOINT": base})
        assert current.setup.otlp == f"{base}/v1/metrics"
        record_secagg_phase("unmask", 0.25, 1)
        shutdown_metrics()  # flushes the last export
    finally:
        server.shutdown()
    posted = [r for r in _Collector.received if r[0] == "/v1/metrics"]
    assert posted and posted[-1][1] == "application/x-protobuf" and posted[-1][2] > 0


def test_count_dropouts_by_phase() -> None:
    quotas = {"gw-a": 3, "gw-b": 2, DIRECT: 2}
    got = count_dropouts({"d1", "d2"}, {"d1"}, {"gw-a", "gw-b"}, {"gw-a"}, quotas)
    assert got == {"training": 1, "report": 2}
    assert count_dropouts({"d1"}, {"d1"}, {"gw-a"}, {"gw-a"}, quotas) == {}  # nobody lost


def test_a_round_where_devices_never_report_counts_their_dropouts(
    metrics: Metrics, tmp_path: Path
) -> None:
    """d1 (direct) takes a task and never reports; gw-b takes its share and never sends its
    partial. The round commits at its deadline with d0 and gw-a's two devices."""
    clock = Clock()
    svc = make_service(tmp_path, clock)
    svc.admin.create_job(ADMIN, spec(rounds=1, devices_per_round=6, min_devices=2))
    devices = [identity(Role.DEVICE, f"d{i}", "home") for i in range(2)]

    def ask(dev: Identity) -> m.TaskAssignment | m.Wait:
        request = m.CheckInRequest(
            device_id=dev.name, nonce=m.new_nonce(), eligibility=m.Eligibility(num_examples=20)
        )
        return svc.checkin(dev, request)

    for dev in devices:
        ask(dev)  # seen: eligible for the direct share
    checkin(svc, GW_A)
    checkin(svc, GW_B)
    svc.tick()
    live = svc.live_round("digits")
    assert live is not None and live.machine.quotas == {"gw-a": 2, "gw-b": 2, DIRECT: 2}
    assert all(isinstance(ask(dev), m.TaskAssignment) for dev in devices)
    checkin(svc, GW_A)
    checkin(svc, GW_B)  # both gateways are handed the round
    pspec = ParamSpec.of(model_params(svc, live.base_sha256))
    (u0,) = device_updates(pspec, ["d0"], seed=1)
    assert svc.submit_update(devices[0], "digits", 1, update_payload("d0", "digits", 1, u0))
    gw_a = partial_payload(GW_A, "digits", 1, device_updates(pspec, ["a1", "a2"], seed=2))
    assert svc.submit_partial(GW_A, "digits", 1, gw_a).accepted
    assert total(metrics, "fedge_dropouts_total") == 0  # nothing counted while it runs
    clock.now += 91  # past the report deadline: the round closes without d1 and gw-b
    svc.tick()
    assert svc.admin.get_job(ADMIN, "digits").rounds[0].state == "committed"
    assert total(metrics, "fedge_dropouts_total", phase="training") == 1  # d1
    assert total(metrics, "fedge_dropouts_total", phase="report") == 2  # gw-b's quota
