"""The HTTP layer end to end: real PKI, real uvicorn over mutual TLS on loopback, real client."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from fedge.errors import (
    AuthorizationError,
    CertificateError,
    PayloadTooLarge,
    ProtocolError,
    RevokedError,
    UnavailableError,
    UnknownNameError,
    ValidationError,
    WireFormatError,
)
from fedge.identity import Role, issue, revoke
from fedge.transport.messages import (
    CheckInRequest,
    Eligibility,
    GatewayCheckIn,
    JobSpec,
    Wait,
    new_nonce,
)

from .conftest import MODEL, MODEL_SHA, UPDATE_LIMIT, Fleet, update_payload
from .nodelay import server_sockets_nodelay

pytestmark = pytest.mark.integration


def checkin_request(device: str = "dev-1", nonce: str | None = None) -> CheckInRequest:
    return CheckInRequest(
        device_id=device, nonce=nonce or new_nonce(), eligibility=Eligibility(num_examples=10)
    )


def test_health_and_openapi(fleet: Fleet) -> None:
    with fleet.client("dev-1") as client:
        assert client.health().protocol == 1
        spec = client._http.get("/openapi.json").json()
    paths = spec["paths"]
    assert "/v1/checkin" in paths and "/v1/admin/jobs" in paths
    body = paths["/v1/jobs/{job_id}/rounds/{round_number}/updates"]["post"]["requestBody"]
    assert "application/octet-stream" in body["content"]


def test_kept_alive_connections_have_nagle_off(fleet: Fleet) -> None:
    """With Nagle on the server socket every answer waited ~40 ms for the client's delayed ACK:
    the server's side of every connection must have TCP_NODELAY set."""
    with fleet.client("dev-1") as client:
        client.health()  # a kept-alive connection is open now
        assert server_sockets_nodelay(fleet.server._server) == [True]


def test_device_checkin_reaches_service_with_identity(fleet: Fleet) -> None:
    with fleet.client("dev-1") as client:
        answer = client.checkin(checkin_request())
    assert isinstance(answer, Wait) and answer.retry_after_s == 5.0
    what, peer, _ = fleet.service.calls[-1]
    assert what == "checkin"
    assert (peer.role, peer.name, peer.site) == (Role.DEVICE, "dev-1", "a")


def test_model_download_and_unknown_model(fleet: Fleet) -> None:
    with fleet.client("dev-1") as client:
        assert client.model(MODEL_SHA) == MODEL
        with pytest.raises(UnknownNameError, match="no model"):
            client.model("0" * 64)
    with fleet.client("gw-a") as gateway:
        assert gateway.model(MODEL_SHA) == MODEL


def test_update_accepted_then_replay_is_409(fleet: Fleet) -> None:
    nonce = new_nonce()
    with fleet.client("dev-1") as client:
        receipt = client.submit_update("job1", 1, update_payload(nonce))
        assert receipt.accepted
        with pytest.raises(ProtocolError, match="replayed nonce"):
            client.submit_update("job1", 1, update_payload(nonce))
        with pytest.raises(ProtocolError, match="replayed nonce"):
            nonce2 = new_nonce()
            client.checkin(checkin_request(nonce=nonce2))
            client.checkin(checkin_request(nonce=nonce2))


@pytest.mark.parametrize(
    "payload", [b"garbage", update_payload(new_nonce())[:-3], b"\x80\x03cos\nsystem\n."]
)
def test_truncated_or_garbage_payload_is_400(fleet: Fleet, payload: bytes) -> None:
    with fleet.client("dev-1") as client, pytest.raises(WireFormatError):
        client.submit_update("job1", 1, payload)


def test_device_claiming_another_id_is_403(fleet: Fleet) -> None:
    with fleet.client("dev-1") as client, pytest.raises(AuthorizationError, match="dev-2"):
        client.checkin(checkin_request(device="dev-2"))


def test_device_on_admin_and_gateway_routes_is_403(fleet: Fleet) -> None:
    before = len(fleet.service.calls)
    with fleet.client("dev-1") as client:
        with pytest.raises(AuthorizationError, match="admin"):
            client.list_jobs()
        with pytest.raises(AuthorizationError):
            client.create_job(JobSpec(name="j", task="digits", rounds=1, devices_per_round=1))
        with pytest.raises(AuthorizationError, match="gateway"):
            client.submit_partial("job1", 1, update_payload(new_nonce()))
    assert len(fleet.service.calls) == before


def test_gateway_and_admin_routes(fleet: Fleet) -> None:
    with fleet.client("gw-a") as gateway:
        request = GatewayCheckIn(
            gateway_id="gw-a", site="a", nonce=new_nonce(), online_devices=2, eligible_devices=1
        )
        assert gateway.gateway_checkin(request).assignments == []
        with pytest.raises(AuthorizationError):
            gateway.checkin(checkin_request(device="gw-a"))
    with fleet.client("alice") as admin:
        spec = JobSpec(name="new-job", task="digits", rounds=2, devices_per_round=3)
        assert admin.create_job(spec).spec == spec
        assert [j.id for j in admin.list_jobs()] == ["job1"]
        assert admin.get_job("job1").state == "running"
        assert admin.pause_job("job1").state == "paused"
        assert admin.resume_job("job1").state == "running"
        assert admin.list_devices()[0].id == "dev-1"
        assert admin.revoke_device("dev-2").revoked
        with pytest.raises(UnknownNameError, match="no job 'nope'"):
            admin.get_job("nope")
        with pytest.raises(ValidationError):  # 422: path parameter fails the name pattern
            admin.get_job("-bad-")


def test_invalid_json_is_422_with_error_body(fleet: Fleet) -> None:
    with fleet.client("dev-1") as client:
        response = client._http.post("/v1/checkin", json={"device_id": "dev-1", "nonce": "x"})
        assert response.status_code == 422
        body = response.json()
        assert body["error"] == "invalid_request" and "nonce" in body["detail"]
        response = client._http.post("/v1/checkin", content=b"{not json")
        assert response.status_code == 422 and response.json()["error"] == "invalid_request"
        response = client._http.get("/v1/nowhere")
        assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_wrong_content_type_is_refused(fleet: Fleet) -> None:
    with fleet.client("dev-1") as client:
        response = client._http.post("/v1/jobs/job1/rounds/1/updates", json={"a": 1})
        assert response.status_code == 400
        assert "octet-stream" in response.json()["detail"]


def test_oversized_body_is_413_before_service(fleet: Fleet) -> None:
    before = fleet.service.names().count("update")
    big = update_payload(new_nonce(), n=UPDATE_LIMIT)  # 4 bytes a value: 4x the limit
    with fleet.client("dev-1") as client, pytest.raises(PayloadTooLarge, match="limit"):
        client.submit_update("job1", 1, big)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(8):
            yield b"\0" * (UPDATE_LIMIT // 4)

    with fleet.client("dev-1") as client:
        response = client._http.post(
            "/v1/jobs/job1/rounds/1/updates",
            content=chunks(),
            headers={"content-type": "application/octet-stream"},
        )
        assert response.status_code == 413
        assert response.json()["error"] == "payload_too_large"
        assert "transfer-encoding" in response.request.headers
        huge_json = {"device_id": "dev-1", "pad": "x" * 20_000}
        assert client._http.post("/v1/checkin", json=huge_json).status_code == 413
        assert client.health().status == "ok"  # a new connection after the refusal still works
    assert fleet.service.names().count("update") == before


def _raw_context(fleet: Fleet, cert: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(fleet.pki.ca_cert))
    if cert is not None:
        context.load_cert_chain(fleet.pki.cert_for(cert), fleet.pki.key_for(cert))
    return context


def test_no_client_certificate_is_refused_in_handshake(fleet: Fleet) -> None:
    before = len(fleet.service.calls)
    with (
        httpx.Client(verify=_raw_context(fleet, None)) as raw,
        pytest.raises(httpx.TransportError),
    ):
        raw.get(fleet.server.url + "/v1/health")
    assert len(fleet.service.calls) == before


def test_certificate_of_another_ca_is_refused(fleet: Fleet) -> None:
    before = len(fleet.service.calls)
    with (
        fleet.client("dev-1", pki=fleet.other) as stranger,
        pytest.raises((CertificateError, UnavailableError), match="certificate"),
    ):
        stranger.checkin(checkin_request())
    assert len(fleet.service.calls) == before


def test_expired_certificate_is_refused(fleet: Fleet) -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    issue(
        fleet.pki.directory, "device", "dev-old", site="a",
        not_before=past - timedelta(days=2), not_after=past,
    )  # fmt: skip
    with fleet.client("dev-old") as client, pytest.raises((CertificateError, UnavailableError)):
        client.checkin(checkin_request(device="dev-old"))


def test_revocation_takes_effect_on_the_next_request(fleet: Fleet) -> None:
    with fleet.client("dev-revoked") as client:
        assert isinstance(client.checkin(checkin_request(device="dev-revoked")), Wait)
        revoke(fleet.pki.directory, "dev-revoked", "key_compromise")
        calls = len(fleet.service.calls)
        with pytest.raises(RevokedError, match="revoked"):  # same kept-alive connection
            client.checkin(checkin_request(device="dev-revoked"))
    assert len(fleet.service.calls) == calls
