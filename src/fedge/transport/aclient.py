"""The asyncio twin of :class:`~fedge.transport.client.FedgeClient`: one coroutine per endpoint.

:class:`AsyncFedgeClient` speaks the same wire protocol over ``httpx.AsyncClient`` with mutual
TLS, and fails the same way: a refusal by the server raises the exception of its status/code
(:mod:`fedge.transport.errors`); an unreachable peer, a timeout, a 5xx or a 429 raises
:class:`~fedge.errors.UnavailableError`; a server certificate not from the fleet CA (or a TLS
alert refusing ours) raises :class:`~fedge.errors.CertificateError`. No third-party exception
escapes.

It exists for callers that hold many identities in one process -- a load generator running a
thousand device agents on one event loop, say -- where one thread per device would not do. Each
instance is one identity (one client certificate) with its own connection pool; use it as an
``async with`` block or call :meth:`AsyncFedgeClient.aclose`. ``event_hooks`` are passed to
httpx unchanged (e.g. to count the bytes of each request and response). An idle connection is
closed after ``keepalive_expiry`` seconds (httpx's default, 5 s, like uvicorn's server side): a
caller that polls less often than that pays a new TLS handshake per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from fedge.errors import PayloadTooLarge, ValidationError
from fedge.identity import client_ssl_context
from fedge.telemetry.tracing import trace_headers
from fedge.transport.client import _CHECKIN, _DEVICES, _JOBS, _OCTET, _transport_error
from fedge.transport.errors import error_from_response
from fedge.transport.messages import (
    CheckInRequest,
    DeviceView,
    GatewayAssignments,
    GatewayCheckIn,
    Health,
    JobSpec,
    JobView,
    Receipt,
    TaskAssignment,
    Wait,
)

__all__ = ["AsyncFedgeClient"]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
Hook = Callable[[Any], Awaitable[None]]


class AsyncFedgeClient:
    """A mutual-TLS asyncio client of a fedge server (gateway or coordinator), one identity."""

    def __init__(
        self,
        base_url: str,
        *,
        ca: str | Path,
        cert: str | Path,
        key: str | Path,
        timeout: float = 30.0,
        check_hostname: bool = True,
        max_download_bytes: int = 512 * 1024 * 1024,
        max_connections: int = 4,
        keepalive_expiry: float | None = 60.0,
        event_hooks: Mapping[str, Sequence[Hook]] | None = None,
    ) -> None:
        context = client_ssl_context(ca, cert, key, check_hostname=check_hostname)
        self.base_url = base_url.rstrip("/")
        self.max_download_bytes = max_download_bytes
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            verify=context,
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=keepalive_expiry,
            ),
            event_hooks={k: list(v) for k, v in (event_hooks or {}).items()},
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncFedgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- plumbing --------------------------------------------------------------------------
    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            kwargs["headers"] = trace_headers(kwargs.get("headers"))  # + traceparent, in a span
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.base_url + path) from None
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content)
        return response

    async def _json(self, method: str, path: str, body: BaseModel | None = None) -> bytes:
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["content"] = body.model_dump_json().encode()
            kwargs["headers"] = {"content-type": "application/json"}
        return (await self._send(method, path, **kwargs)).content

    @staticmethod
    def _parse(adapter: Callable[[bytes], T], data: bytes, what: str) -> T:
        try:
            return adapter(data)
        except ValueError as exc:
            raise ValidationError(f"the server sent an invalid {what}: {exc}") from None

    def _model(self, model: type[M], data: bytes) -> M:
        return self._parse(model.model_validate_json, data, model.__name__)

    async def _upload(self, path: str, payload: bytes) -> Receipt:
        response = await self._send("POST", path, content=payload, headers=_OCTET)
        return self._model(Receipt, response.content)

    # -- every role ------------------------------------------------------------------------
    async def health(self) -> Health:
        """``GET /v1/health``."""
        return self._model(Health, await self._json("GET", "/v1/health"))

    async def model(self, sha256: str) -> bytes:
        """``GET /v1/models/{sha256}``: the model payload (its hash is the caller's to check)."""
        path = f"/v1/models/{sha256}"
        try:
            async with self._http.stream("GET", path, headers=trace_headers()) as response:
                if response.status_code >= 400:
                    raise error_from_response(response.status_code, await response.aread())
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_download_bytes:
                        raise PayloadTooLarge(
                            f"model {sha256} is over {self.max_download_bytes} bytes; refusing it"
                        )
                    chunks.append(chunk)
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.base_url + path) from None
        return b"".join(chunks)

    # -- device ----------------------------------------------------------------------------
    async def checkin(self, request: CheckInRequest) -> TaskAssignment | Wait:
        """``POST /v1/checkin``: a task, or when to come back."""
        data = await self._json("POST", "/v1/checkin", request)
        return self._parse(_CHECKIN.validate_json, data, "check-in response")

    async def submit_update(self, job_id: str, round_number: int, payload: bytes) -> Receipt:
        """``POST /v1/jobs/{job}/rounds/{r}/updates`` with an update payload."""
        return await self._upload(f"/v1/jobs/{job_id}/rounds/{round_number}/updates", payload)

    # -- gateway ---------------------------------------------------------------------------
    async def gateway_checkin(self, request: GatewayCheckIn) -> GatewayAssignments:
        """``POST /v1/gateway/checkin``: the gateway's quotas for the open rounds."""
        data = await self._json("POST", "/v1/gateway/checkin", request)
        return self._model(GatewayAssignments, data)

    async def submit_partial(self, job_id: str, round_number: int, payload: bytes) -> Receipt:
        """``POST /v1/jobs/{job}/rounds/{r}/partials`` with a partial-sum payload."""
        return await self._upload(f"/v1/jobs/{job_id}/rounds/{round_number}/partials", payload)

    # -- admin -----------------------------------------------------------------------------
    async def create_job(self, spec: JobSpec) -> JobView:
        """``POST /v1/admin/jobs``."""
        return self._model(JobView, await self._json("POST", "/v1/admin/jobs", spec))

    async def list_jobs(self) -> list[JobView]:
        """``GET /v1/admin/jobs``."""
        data = await self._json("GET", "/v1/admin/jobs")
        return self._parse(_JOBS.validate_json, data, "job list")

    async def get_job(self, job_id: str) -> JobView:
        """``GET /v1/admin/jobs/{job}``."""
        return self._model(JobView, await self._json("GET", f"/v1/admin/jobs/{job_id}"))

    async def pause_job(self, job_id: str) -> JobView:
        """``POST /v1/admin/jobs/{job}/pause``."""
        return self._model(JobView, await self._json("POST", f"/v1/admin/jobs/{job_id}/pause"))

    async def resume_job(self, job_id: str) -> JobView:
        """``POST /v1/admin/jobs/{job}/resume``."""
        return self._model(JobView, await self._json("POST", f"/v1/admin/jobs/{job_id}/resume"))

    async def list_devices(self) -> list[DeviceView]:
        """``GET /v1/admin/devices``."""
        data = await self._json("GET", "/v1/admin/devices")
        return self._parse(_DEVICES.validate_json, data, "device list")

    async def revoke_device(self, device_id: str) -> DeviceView:
        """``POST /v1/admin/devices/{device}/revoke``."""
        data = await self._json("POST", f"/v1/admin/devices/{device_id}/revoke")
        return self._model(DeviceView, data)
