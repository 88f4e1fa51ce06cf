"""The HTTP API: every endpoint of :mod:`fedge.transport.messages`, over the service interfaces.

Routes do only HTTP: authenticate and authorize the peer (:mod:`.auth`), refuse oversized bodies
before reading them (:mod:`.limits`), parse JSON with the message models (422 when invalid), read
tensor payloads as ``application/octet-stream``, call one service method, and let
:mod:`.errors` map fedge errors to status codes. A coordinator passes all three services; a
gateway passes only ``device``; routes of a missing service are not served (404) nor documented.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from fedge.errors import AuthorizationError, ConfigError, ValidationError
from fedge.identity import Identity, PeerVerifier, Role
from fedge.telemetry.http import TraceContextMiddleware
from fedge.transport.auth import require_roles
from fedge.transport.errors import install_error_handlers
from fedge.transport.limits import BodyLimitMiddleware, BodyLimits
from fedge.transport.longpoll import LongPoll
from fedge.transport.messages import (
    PROTOCOL_VERSION,
    CheckInRequest,
    CheckInResponse,
    DeviceCertificates,
    DeviceRegistration,
    DeviceView,
    ErrorBody,
    GatewayAssignments,
    GatewayCheckIn,
    Health,
    HealthReport,
    JobSpec,
    JobView,
    ModelDiff,
    ModelRelease,
    ModelVersionView,
    Receipt,
    SecAggBatch,
    SecAggBatchReceipt,
    SecAggInbox,
    SecAggJoin,
    SecAggSiteInbox,
    TaskAssignment,
    Wait,
)
from fedge.transport.services import (
    AdminService,
    DeviceService,
    SecAggRelayService,
    SecAggUplinkService,
    UplinkService,
)

__all__ = ["OCTET_STREAM", "build_app"]

OCTET_STREAM = "application/octet-stream"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
JobId = Annotated[str, Path(pattern=_NAME, description="job id")]
DeviceId = Annotated[str, Path(pattern=_NAME, description="device id")]
RoundNumber = Annotated[int, Path(ge=1, le=1_000_000_000, description="round number")]
Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="model content hash")]
DevicePeer = Annotated[Identity, Depends(require_roles({Role.DEVICE}))]
GatewayPeer = Annotated[Identity, Depends(require_roles({Role.GATEWAY}))]
ModelPeer = Annotated[Identity, Depends(require_roles({Role.DEVICE, Role.GATEWAY}))]
AdminPeer = Annotated[Identity, Depends(require_roles({Role.ADMIN}))]

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_BINARY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "a fedge tensor payload (fedge.core.serde; never pickle)",
        "content": {OCTET_STREAM: _BINARY},
    }
}
_ERR = {"model": ErrorBody}
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: _ERR, 403: _ERR, 422: _ERR}
_JSON_ERRORS = {**_AUTH_ERRORS, 400: _ERR, 404: _ERR, 409: _ERR, 413: _ERR}
_PAYLOAD_ERRORS = {**_JSON_ERRORS, 415: _ERR}


async def _payload(request: Request) -> bytes:
    """The raw tensor payload of a request (the size limit is already enforced)."""
    media = request.headers.get("content-type", OCTET_STREAM).split(";")[0].strip().lower()
    if media != OCTET_STREAM:
        raise ValidationError(f"send tensor payloads as {OCTET_STREAM}, not {media!r}")
    body = await request.body()
    if not body:
        raise ValidationError("empty payload: send a fedge tensor payload")
    return body


def _binary(data: bytes, sha256: str) -> Response:
    headers = {"ETag": f'"{sha256}"', "Cache-Control": "private, max-age=31536000, immutable"}
    return Response(content=data, media_type=OCTET_STREAM, headers=headers)


def build_app(
    *,
    device: DeviceService | None,
    uplink: UplinkService | None,
    admin: AdminService | None,
    verifier: PeerVerifier,
    limits: BodyLimits | None = None,
    title: str = "fedge",
    secagg_relay: SecAggRelayService | None = None,
    secagg_uplink: SecAggUplinkService | None = None,
    long_poll: LongPoll | None = None,
) -> FastAPI:
    """The FastAPI app serving the routes of the services given (mutual TLS assumed).

    ``long_poll`` (the device service's) holds check-ins that find no task (:mod:`.longpoll`).

    ``secagg_relay`` (a gateway) serves devices' secure-aggregation routes; ``secagg_uplink``
    (the coordinator) serves the gateways' side of them.
    """
    if device is None and uplink is None and admin is None:
        raise ConfigError("build_app needs at least one of device, uplink, admin")
    app = FastAPI(
        title=title,
        version=str(PROTOCOL_VERSION),
        description="fedge wire protocol v1: JSON control messages, binary tensor payloads.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.verifier = verifier
    app.add_middleware(BodyLimitMiddleware, limit_for=(limits or BodyLimits()).for_path)
    app.add_middleware(TraceContextMiddleware)  # outermost: a refused body is in the span too
    install_error_handlers(app)

    @app.get("/v1/health", tags=["health"], responses={401: _ERR})
    def health() -> Health:
        """The server is up and speaks this protocol version (TLS handshake only)."""
        return Health()

    if device is not None or uplink is not None:

        @app.get(
            "/v1/models/{sha256}",
            tags=["device", "gateway"],
            response_class=Response,
            responses={200: {"content": {OCTET_STREAM: _BINARY}}, **_JSON_ERRORS},
        )
        def get_model(sha256: Sha256, peer: ModelPeer) -> Response:
            """The model payload with this content hash."""
            service = uplink if peer.role is Role.GATEWAY else device
            if service is None:
                raise AuthorizationError(f"a {peer.role} may not fetch models from this server")
            return _binary(service.model(peer, sha256), sha256)

        @app.get(
            "/v1/models/{sha256}/release",
            tags=["device", "gateway"],
            response_model=ModelRelease,
            responses=_JSON_ERRORS,
        )
        def get_release(sha256: Sha256, peer: ModelPeer) -> ModelRelease:
            """The release signature of a model version (404 when it is unsigned)."""
            service = uplink if peer.role is Role.GATEWAY else device
            if service is None:
                raise AuthorizationError(f"a {peer.role} may not fetch models from this server")
            return service.release(peer, sha256)

        @app.get(
            "/v1/jobs/{job_id}/production",
            tags=["device", "gateway"],
            response_model=ModelRelease,
            responses=_JSON_ERRORS,
        )
        def get_production(job_id: JobId, peer: ModelPeer) -> ModelRelease:
            """The job's production model version and its release (empty signature: unsigned)."""
            service = uplink if peer.role is Role.GATEWAY else device
            if service is None:
                raise AuthorizationError(f"a {peer.role} may not fetch models from this server")
            return service.production(peer, job_id)

        @app.post("/v1/jobs/{job_id}/health", tags=["device", "gateway"], responses=_JSON_ERRORS)
        def report_health(job_id: JobId, report: HealthReport, peer: ModelPeer) -> Receipt:
            """A device's health check of a canary version (a gateway forwards its devices')."""
            service = uplink if peer.role is Role.GATEWAY else device
            if service is None:
                raise AuthorizationError(f"a {peer.role} may not report health to this server")
            return service.report_health(peer, job_id, report)

    if device is not None:
        _device_routes(app, device, long_poll)
    if uplink is not None:
        _uplink_routes(app, uplink)
    if admin is not None:
        _admin_routes(app, admin)
    if secagg_relay is not None:
        _secagg_relay_routes(app, secagg_relay)
    if secagg_uplink is not None:
        _secagg_uplink_routes(app, secagg_uplink)
    return app


_SECAGG = "/jobs/{job_id}/rounds/{round_number}/secagg"
Cursor = Annotated[int, Query(ge=0, le=1_000_000, description="messages already received")]


def _secagg_relay_routes(app: FastAPI, relay: SecAggRelayService) -> None:
    kw: dict[str, Any] = {"tags": ["device", "secagg"], "responses": _JSON_ERRORS}

    @app.post(f"/v1{_SECAGG}/join", **kw)
    def secagg_join(
        job_id: JobId, round_number: RoundNumber, join: SecAggJoin, peer: DevicePeer
    ) -> Receipt:
        """Join a round's secure aggregation with a key bound to the device's certificate."""
        return relay.secagg_join(peer, job_id, round_number, join)

    @app.post(
        f"/v1{_SECAGG}",
        tags=["device", "secagg"],
        openapi_extra=_BINARY_BODY,
        responses=_PAYLOAD_ERRORS,
    )
    async def secagg_submit(
        job_id: JobId, round_number: RoundNumber, request: Request, peer: DevicePeer
    ) -> Receipt:
        """A device's secure-aggregation message (fedge.secagg wire format)."""
        payload = await _payload(request)
        return await run_in_threadpool(relay.secagg_submit, peer, job_id, round_number, payload)

    @app.get(f"/v1{_SECAGG}/inbox", **kw)
    def secagg_inbox(
        job_id: JobId, round_number: RoundNumber, peer: DevicePeer, after: Cursor = 0
    ) -> SecAggInbox:
        """The coordinator's secure-aggregation messages for this device (long poll)."""
        return relay.secagg_inbox(peer, job_id, round_number, after)


def _secagg_uplink_routes(app: FastAPI, uplink: SecAggUplinkService) -> None:
    kw: dict[str, Any] = {"tags": ["gateway", "secagg"], "responses": _JSON_ERRORS}

    @app.post(f"/v1/gateway{_SECAGG}/join", **kw)
    def relay_join(
        job_id: JobId, round_number: RoundNumber, join: SecAggJoin, peer: GatewayPeer
    ) -> Receipt:
        """A device's join, relayed by its gateway."""
        return uplink.secagg_join(peer, job_id, round_number, join)

    @app.post(
        f"/v1/gateway{_SECAGG}",
        tags=["gateway", "secagg"],
        openapi_extra=_BINARY_BODY,
        responses=_PAYLOAD_ERRORS,
    )
    async def relay_submit(
        job_id: JobId, round_number: RoundNumber, request: Request, peer: GatewayPeer
    ) -> Receipt:
        """A device's secagg message, relayed, or the gateway's masked sum."""
        payload = await _payload(request)
        return await run_in_threadpool(uplink.secagg_submit, peer, job_id, round_number, payload)

    @app.get(f"/v1/gateway{_SECAGG}/inbox/{{device_id}}", **kw)
    def relay_inbox(
        job_id: JobId,
        round_number: RoundNumber,
        device_id: DeviceId,
        peer: GatewayPeer,
        after: Cursor = 0,
    ) -> SecAggInbox:
        """Secure-aggregation messages for one of the gateway's devices (long poll)."""
        return uplink.secagg_inbox(peer, job_id, round_number, device_id, after)

    @app.post(f"/v1/gateway{_SECAGG}/batch", **kw)
    def relay_batch(
        job_id: JobId, round_number: RoundNumber, batch: SecAggBatch, peer: GatewayPeer
    ) -> SecAggBatchReceipt:
        """Many of the gateway's devices' joins and control messages; one result per item."""
        return uplink.secagg_batch(peer, job_id, round_number, batch)

    @app.get(f"/v1/gateway{_SECAGG}/inbox", **kw)
    def relay_site_inbox(
        job_id: JobId, round_number: RoundNumber, peer: GatewayPeer, after: Cursor = 0
    ) -> SecAggSiteInbox:
        """Secure-aggregation messages for all of the gateway's devices (long poll)."""
        return uplink.secagg_site_inbox(peer, job_id, round_number, after)


def _device_routes(app: FastAPI, device: DeviceService, long_poll: LongPoll | None) -> None:
    @app.post(
        "/v1/checkin", tags=["device"], response_model=CheckInResponse, responses=_JSON_ERRORS
    )
    async def checkin(request: CheckInRequest, peer: DevicePeer) -> TaskAssignment | Wait:
        """Ask for work: a task within the round's quota, or when to come back.

        With ``wait_s`` the request is held (long poll, up to the server's own bound) until a
        task is there for the device; ``Wait(retry_after_s=0)`` then means "ask again now".
        """
        hold = long_poll.hold_for(request.wait_s) if long_poll is not None else 0.0
        if request.eligibility.num_examples <= 0:
            hold = 0.0  # nothing to train on: no round will change that
        if long_poll is None or hold <= 0:
            return await run_in_threadpool(device.checkin, peer, request)
        async with long_poll.holding(hold) as waiter:
            if waiter is None:  # the server holds all it may: answer at once
                return await run_in_threadpool(device.checkin, peer, request)
            waiter.arm()  # before the first look, so an opening in between is not missed
            answer = await run_in_threadpool(device.checkin, peer, request)
            while isinstance(answer, Wait) and await waiter.woken():
                waiter.arm()
                task = await run_in_threadpool(device.recheck, peer, request)
                if task is not None:
                    return task
            if isinstance(answer, Wait):
                return answer.model_copy(update={"retry_after_s": 0.0})
            return answer

    @app.post(
        "/v1/jobs/{job_id}/rounds/{round_number}/updates",
        tags=["device"],
        openapi_extra=_BINARY_BODY,
        responses=_PAYLOAD_ERRORS,
    )
    async def submit_update(
        job_id: JobId, round_number: RoundNumber, request: Request, peer: DevicePeer
    ) -> Receipt:
        """Upload a device's update payload for a round."""
        payload = await _payload(request)
        return await run_in_threadpool(device.submit_update, peer, job_id, round_number, payload)


def _uplink_routes(app: FastAPI, uplink: UplinkService) -> None:
    @app.post("/v1/gateway/checkin", tags=["gateway"], responses=_JSON_ERRORS)
    def gateway_checkin(request: GatewayCheckIn, peer: GatewayPeer) -> GatewayAssignments:
        """A gateway's quotas for the rounds now open."""
        return uplink.gateway_checkin(peer, request)

    @app.post("/v1/gateway/devices", tags=["gateway"], responses=_JSON_ERRORS)
    def register_devices(request: DeviceCertificates, peer: GatewayPeer) -> DeviceRegistration:
        """Certificates of the gateway's devices: their sites, before a partial names them."""
        return uplink.register_devices(peer, request)

    @app.post(
        "/v1/jobs/{job_id}/rounds/{round_number}/partials",
        tags=["gateway"],
        openapi_extra=_BINARY_BODY,
        responses=_PAYLOAD_ERRORS,
    )
    async def submit_partial(
        job_id: JobId, round_number: RoundNumber, request: Request, peer: GatewayPeer
    ) -> Receipt:
        """Upload a gateway's partial aggregate for a round (idempotent)."""
        payload = await _payload(request)
        return await run_in_threadpool(uplink.submit_partial, peer, job_id, round_number, payload)


def _admin_routes(app: FastAPI, admin: AdminService) -> None:
    kw: dict[str, Any] = {"tags": ["admin"], "responses": _JSON_ERRORS}

    @app.post("/v1/admin/jobs", status_code=201, **kw)
    def create_job(spec: JobSpec, peer: AdminPeer) -> JobView:
        """Create a job."""
        return admin.create_job(peer, spec)

    @app.get("/v1/admin/jobs", **kw)
    def list_jobs(peer: AdminPeer) -> list[JobView]:
        """Every job."""
        return admin.list_jobs(peer)

    @app.get("/v1/admin/jobs/{job_id}", **kw)
    def get_job(job_id: JobId, peer: AdminPeer) -> JobView:
        """One job with its rounds."""
        return admin.get_job(peer, job_id)

    @app.post("/v1/admin/jobs/{job_id}/pause", **kw)
    def pause_job(job_id: JobId, peer: AdminPeer) -> JobView:
        """Pause a job after its current round."""
        return admin.pause_job(peer, job_id)

    @app.post("/v1/admin/jobs/{job_id}/resume", **kw)
    def resume_job(job_id: JobId, peer: AdminPeer) -> JobView:
        """Resume a paused job."""
        return admin.resume_job(peer, job_id)

    @app.get("/v1/admin/devices", **kw)
    def list_devices(peer: AdminPeer) -> list[DeviceView]:
        """Every device the fleet knows."""
        return admin.list_devices(peer)

    @app.post("/v1/admin/devices/{device_id}/revoke", **kw)
    def revoke_device(device_id: DeviceId, peer: AdminPeer) -> DeviceView:
        """Revoke a device's certificate and drop it from rounds."""
        return admin.revoke_device(peer, device_id)

    @app.get("/v1/admin/jobs/{job_id}/models", **kw)
    def list_models(job_id: JobId, peer: AdminPeer) -> list[ModelVersionView]:
        """Every model version of a job: lineage, metrics, status."""
        return admin.list_models(peer, job_id)

    @app.get("/v1/admin/models/{sha256}", **kw)
    def get_model_version(sha256: Sha256, peer: AdminPeer) -> ModelVersionView:
        """One model version."""
        return admin.get_model(peer, sha256)

    @app.get(
        "/v1/admin/models/{sha256}/payload",
        tags=["admin"],
        response_class=Response,
        responses={200: {"content": {OCTET_STREAM: _BINARY}}, **_JSON_ERRORS},
    )
    def export_model(sha256: Sha256, peer: AdminPeer) -> Response:
        """The model's weights (fedge safetensors payload), for export."""
        return _binary(admin.model(peer, sha256), sha256)

    @app.post("/v1/admin/models/{sha256}/promote", **kw)
    def promote_model(sha256: Sha256, peer: AdminPeer) -> ModelVersionView:
        """Make a version production (the current one is retired)."""
        return admin.promote_model(peer, sha256)

    @app.post("/v1/admin/models/{sha256}/reject", **kw)
    def reject_model(sha256: Sha256, peer: AdminPeer) -> ModelVersionView:
        """Reject a candidate."""
        return admin.reject_model(peer, sha256)

    @app.post("/v1/admin/jobs/{job_id}/rollback", **kw)
    def rollback_model(job_id: JobId, peer: AdminPeer) -> ModelVersionView:
        """Roll the job's production version back; returns the restored version."""
        return admin.rollback_model(peer, job_id)

    @app.get("/v1/admin/models/{a}/diff/{b}", **kw)
    def diff_models(
        a: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")],
        b: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")],
        peer: AdminPeer,
    ) -> ModelDiff:
        """Metric changes and weight distance from version a to b."""
        return admin.diff_models(peer, a, b)
