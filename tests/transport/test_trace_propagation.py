"""Trace context crosses a real mutual-TLS hop: the clients inject ``traceparent``, the API app
continues the caller's trace in a server span (fedge.telemetry.http)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
from opentelemetry.trace import SpanKind
from tests.telemetry.conftest import Spans, capture_spans, parent_id, span_id, trace_id

from fedge.core.serde import encode_arrays
from fedge.telemetry.http import round_of_path
from fedge.telemetry.tracing import span
from fedge.transport.aclient import AsyncFedgeClient
from fedge.transport.messages import new_nonce

from .conftest import Fleet


@pytest.fixture
def spans() -> Iterator[Spans]:
    with capture_spans() as captured:
        yield captured


def test_a_request_in_a_span_is_continued_by_the_server(fleet: Fleet, spans: Spans) -> None:
    with fleet.client("dev-1") as client, span("fedge.device.report"):
        client.health()
    caller, server = spans.one("fedge.device.report"), spans.wait_for("GET /v1/health")
    assert server.kind is SpanKind.SERVER
    assert trace_id(server) == trace_id(caller) and parent_id(server) == span_id(caller)
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/v1/health"
    assert server.attributes["http.response.status_code"] == 200


def test_the_route_template_names_the_span_and_refusals_are_recorded(
    fleet: Fleet, spans: Spans
) -> None:
    meta = {"kind": "update", "job": "job1", "round": "1", "device": "dev-1", "nonce": new_nonce()}
    payload = encode_arrays({"w": np.ones(6, dtype=np.float32)}, meta)
    with fleet.client("dev-1") as client, span("report"):
        client.submit_update("job1", 1, payload)
    server = spans.wait_for("POST /v1/jobs/{job_id}/rounds/{round_number}/updates")
    assert server.attributes is not None
    assert server.attributes["url.path"] == "/v1/jobs/job1/rounds/1/updates"
    assert parent_id(server) == span_id(spans.one("report"))


def test_requests_outside_a_trace_make_no_span(fleet: Fleet, spans: Spans) -> None:
    with fleet.client("dev-1") as client:
        client.health()
        with span("later"):
            client.health()  # its server span ends after the first request's would have
    spans.wait_for("GET /v1/health")
    assert sorted(s.name for s in spans.all()) == ["GET /v1/health", "later"]


def test_the_async_client_injects_too(fleet: Fleet, spans: Spans) -> None:
    async def call() -> None:
        async with AsyncFedgeClient(
            fleet.server.url,
            ca=fleet.pki.ca_cert,
            cert=fleet.pki.cert_for("dev-2"),
            key=fleet.pki.key_for("dev-2"),
            timeout=10.0,
        ) as client:
            with span("async-caller"):
                await client.health()

    asyncio.run(call())
    assert parent_id(spans.wait_for("GET /v1/health")) == span_id(spans.one("async-caller"))


def test_round_paths_name_their_job_and_round() -> None:
    assert round_of_path("/v1/jobs/j-1/rounds/12/partials") == ("j-1", 12)
    assert round_of_path("/v1/gateway/jobs/j/rounds/3/secagg/inbox/dev") == ("j", 3)
    assert round_of_path("/v1/jobs/j/production") is None
