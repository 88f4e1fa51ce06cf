"""The client side of the wire protocol: one method per endpoint, over httpx with mutual TLS.

Every failure is a fedge error (third-party exceptions stop here):

- a refusal by the server → the exception of its status/code (:mod:`fedge.transport.errors`),
  whose message is the server's ``detail``;
- a connection refused, reset or timed out, or a 5xx/429 answer → :class:`UnavailableError`
  (retry it, e.g. with :func:`retry_with_backoff`);
- a server certificate not from our fleet CA, or a TLS alert refusing ours →
  :class:`CertificateError` (final: retrying will not help). A server refusing our certificate
  in a TLS 1.3 handshake often just closes the connection (asyncio sends no alert): that is
  indistinguishable from a crash and surfaces as :class:`UnavailableError` with a hint.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from fedge.errors import (
    CertificateError,
    FedgeError,
    PayloadTooLarge,
    UnavailableError,
    ValidationError,
)
from fedge.identity import client_ssl_context
from fedge.telemetry.tracing import trace_headers
from fedge.transport.errors import error_from_response
from fedge.transport.messages import (
    CheckInRequest,
    CheckInResponse,
    DeviceCertificates,
    DeviceRegistration,
    DeviceView,
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

__all__ = ["FedgeClient", "is_retryable", "retry_with_backoff"]

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
_OCTET = {"content-type": "application/octet-stream"}
_CHECKIN = TypeAdapter[TaskAssignment | Wait](CheckInResponse)
_JOBS = TypeAdapter(list[JobView])
_DEVICES = TypeAdapter(list[DeviceView])
_VERSIONS = TypeAdapter(list[ModelVersionView])
_CERT_ALERTS = ("CERTIFICATE", "UNKNOWN_CA", "ALERT_BAD", "ALERT_ACCESS_DENIED", "HANDSHAKE_FAIL")


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return current
        current = current.__cause__ or current.__context__
    return None


def _transport_error(exc: httpx.TransportError, url: str) -> FedgeError:
    cause = _ssl_cause(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return CertificateError(
            f"the server at {url} did not present a certificate of our fleet CA: {cause}"
        )
    if cause is not None and any(a in str(cause).upper() for a in _CERT_ALERTS):
        return CertificateError(
            f"the server at {url} refused our client certificate ({cause}); check it is issued"
            " by the fleet CA, current and not revoked"
        )
    if isinstance(exc, httpx.TimeoutException):
        return UnavailableError(f"request to {url} timed out: {exc or type(exc).__name__}")
    hint = ""
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
        # A server refusing our certificate in a TLS 1.3 handshake just closes the connection.
        hint = (
            "; if this persists the server may be refusing our certificate (check it is from"
            " the fleet CA, current and not revoked)"
        )
    return UnavailableError(f"request to {url} failed: {exc or type(exc).__name__}{hint}")


class FedgeClient:
    """A mutual-TLS client of a fedge server (gateway or coordinator); thread-safe."""

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
    ) -> None:
        context = client_ssl_context(ca, cert, key, check_hostname=check_hostname)
        self.base_url = base_url.rstrip("/")
        self.max_download_bytes = max_download_bytes
        self._http = httpx.Client(
            base_url=self.base_url,
            verify=context,
            timeout=timeout,
            # below the server's 75 s so the client never reuses a connection the server closes
            limits=httpx.Limits(keepalive_expiry=60.0),
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> FedgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------
    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            kwargs["headers"] = trace_headers(kwargs.get("headers"))  # + traceparent, in a span
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.base_url + path) from None
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content)
        return response

    def _json(self, method: str, path: str, body: BaseModel | None = None) -> bytes:
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["content"] = body.model_dump_json().encode()
            kwargs["headers"] = {"content-type": "application/json"}
        return self._send(method, path, **kwargs).content

    @staticmethod
    def _parse(adapter: Callable[[bytes], T], data: bytes, what: str) -> T:
        try:
            return adapter(data)
        except ValueError as exc:
            raise ValidationError(f"the server sent an invalid {what}: {exc}") from None

    def _model(self, model: type[M], data: bytes) -> M:
        return self._parse(model.model_validate_json, data, model.__name__)

    def _upload(self, path: str, payload: bytes) -> Receipt:
        return self._model(
            Receipt, self._send("POST", path, content=payload, headers=_OCTET).content
        )

    # -- every role ------------------------------------------------------------------------
    def health(self) -> Health:
        """``GET /v1/health``."""
        return self._model(Health, self._json("GET", "/v1/health"))

    def model(self, sha256: str) -> bytes:
        """``GET /v1/models/{sha256}``: the model payload (its hash is the caller's to check)."""
        path = f"/v1/models/{sha256}"
        try:
            with self._http.stream("GET", path, headers=trace_headers()) as response:
                if response.status_code >= 400:
                    raise error_from_response(response.status_code, response.read())
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_download_bytes:
                        raise PayloadTooLarge(
                            f"model {sha256} is over {self.max_download_bytes} bytes; refusing it"
                        )
                    chunks.append(chunk)
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.base_url + path) from None
        return b"".join(chunks)

    def release(self, sha256: str) -> ModelRelease:
        """``GET /v1/models/{sha256}/release``: its release signature (404: unsigned)."""
        return self._model(ModelRelease, self._json("GET", f"/v1/models/{sha256}/release"))

    def production(self, job_id: str) -> ModelRelease:
        """``GET /v1/jobs/{job}/production``: the production version (404: none yet)."""
        return self._model(ModelRelease, self._json("GET", f"/v1/jobs/{job_id}/production"))

    def report_health(self, job_id: str, report: HealthReport) -> Receipt:
        """``POST /v1/jobs/{job}/health``: a health check of a canary version."""
        return self._model(Receipt, self._json("POST", f"/v1/jobs/{job_id}/health", report))

    # -- device ----------------------------------------------------------------------------
    def checkin(self, request: CheckInRequest) -> TaskAssignment | Wait:
        """``POST /v1/checkin``: a task, or when to come back."""
        data = self._json("POST", "/v1/checkin", request)
        return self._parse(_CHECKIN.validate_json, data, "check-in response")

    def submit_update(self, job_id: str, round_number: int, payload: bytes) -> Receipt:
        """``POST /v1/jobs/{job}/rounds/{r}/updates`` with an update payload."""
        return self._upload(f"/v1/jobs/{job_id}/rounds/{round_number}/updates", payload)

    def secagg_join(self, job_id: str, round_number: int, join: SecAggJoin) -> Receipt:
        """``POST /v1/jobs/{job}/rounds/{r}/secagg/join``."""
        path = f"/v1/jobs/{job_id}/rounds/{round_number}/secagg/join"
        return self._model(Receipt, self._json("POST", path, join))

    def secagg_submit(self, job_id: str, round_number: int, payload: bytes) -> Receipt:
        """``POST /v1/jobs/{job}/rounds/{r}/secagg`` with a secagg wire message."""
        return self._upload(f"/v1/jobs/{job_id}/rounds/{round_number}/secagg", payload)

    def secagg_inbox(self, job_id: str, round_number: int, after: int) -> SecAggInbox:
        """``GET /v1/jobs/{job}/rounds/{r}/secagg/inbox?after=N``."""
        path = f"/v1/jobs/{job_id}/rounds/{round_number}/secagg/inbox?after={int(after)}"
        return self._model(SecAggInbox, self._json("GET", path))

    # -- gateway ---------------------------------------------------------------------------
    def relay_secagg_join(self, job_id: str, round_number: int, join: SecAggJoin) -> Receipt:
        """``POST /v1/gateway/jobs/{job}/rounds/{r}/secagg/join``: forward a device's join."""
        path = f"/v1/gateway/jobs/{job_id}/rounds/{round_number}/secagg/join"
        return self._model(Receipt, self._json("POST", path, join))

    def relay_secagg_submit(self, job_id: str, round_number: int, payload: bytes) -> Receipt:
        """``POST /v1/gateway/jobs/{job}/rounds/{r}/secagg``: a relayed message or a relay sum."""
        return self._upload(f"/v1/gateway/jobs/{job_id}/rounds/{round_number}/secagg", payload)

    def relay_secagg_inbox(
        self, job_id: str, round_number: int, device_id: str, after: int
    ) -> SecAggInbox:
        """``GET /v1/gateway/jobs/{job}/rounds/{r}/secagg/inbox/{device}?after=N``."""
        path = (
            f"/v1/gateway/jobs/{job_id}/rounds/{round_number}/secagg/inbox/{device_id}"
            f"?after={int(after)}"
        )
        return self._model(SecAggInbox, self._json("GET", path))

    def relay_secagg_batch(
        self, job_id: str, round_number: int, batch: SecAggBatch
    ) -> SecAggBatchReceipt:
        """``POST /v1/gateway/jobs/{job}/rounds/{r}/secagg/batch``: many devices' messages."""
        path = f"/v1/gateway/jobs/{job_id}/rounds/{round_number}/secagg/batch"
        return self._model(SecAggBatchReceipt, self._json("POST", path, batch))

    def relay_secagg_site_inbox(
        self, job_id: str, round_number: int, after: int
    ) -> SecAggSiteInbox:
        """``GET /v1/gateway/jobs/{job}/rounds/{r}/secagg/inbox?after=N``: the site's messages."""
        path = f"/v1/gateway/jobs/{job_id}/rounds/{round_number}/secagg/inbox?after={int(after)}"
        return self._model(SecAggSiteInbox, self._json("GET", path))

    def gateway_checkin(self, request: GatewayCheckIn) -> GatewayAssignments:
        """``POST /v1/gateway/checkin``: the gateway's quotas for the open rounds."""
        return self._model(GatewayAssignments, self._json("POST", "/v1/gateway/checkin", request))

    def submit_partial(self, job_id: str, round_number: int, payload: bytes) -> Receipt:
        """``POST /v1/jobs/{job}/rounds/{r}/partials`` with a partial-sum payload."""
        return self._upload(f"/v1/jobs/{job_id}/rounds/{round_number}/partials", payload)

    def register_devices(self, request: DeviceCertificates) -> DeviceRegistration:
        """``POST /v1/gateway/devices``: the site's devices' certificates."""
        return self._model(DeviceRegistration, self._json("POST", "/v1/gateway/devices", request))

    # -- admin -----------------------------------------------------------------------------
    def create_job(self, spec: JobSpec) -> JobView:
        """``POST /v1/admin/jobs``."""
        return self._model(JobView, self._json("POST", "/v1/admin/jobs", spec))

    def list_jobs(self) -> list[JobView]:
        """``GET /v1/admin/jobs``."""
        return self._parse(_JOBS.validate_json, self._json("GET", "/v1/admin/jobs"), "job list")

    def get_job(self, job_id: str) -> JobView:
        """``GET /v1/admin/jobs/{job}``."""
        return self._model(JobView, self._json("GET", f"/v1/admin/jobs/{job_id}"))

    def pause_job(self, job_id: str) -> JobView:
        """``POST /v1/admin/jobs/{job}/pause``."""
        return self._model(JobView, self._json("POST", f"/v1/admin/jobs/{job_id}/pause"))

    def resume_job(self, job_id: str) -> JobView:
        """``POST /v1/admin/jobs/{job}/resume``."""
        return self._model(JobView, self._json("POST", f"/v1/admin/jobs/{job_id}/resume"))

    def list_devices(self) -> list[DeviceView]:
        """``GET /v1/admin/devices``."""
        data = self._json("GET", "/v1/admin/devices")
        return self._parse(_DEVICES.validate_json, data, "device list")

    def revoke_device(self, device_id: str) -> DeviceView:
        """``POST /v1/admin/devices/{device}/revoke``."""
        return self._model(DeviceView, self._json("POST", f"/v1/admin/devices/{device_id}/revoke"))

    def list_models(self, job_id: str) -> list[ModelVersionView]:
        """``GET /v1/admin/jobs/{job}/models``."""
        data = self._json("GET", f"/v1/admin/jobs/{job_id}/models")
        return self._parse(_VERSIONS.validate_json, data, "model list")

    def get_model(self, sha256: str) -> ModelVersionView:
        """``GET /v1/admin/models/{sha256}``."""
        return self._model(ModelVersionView, self._json("GET", f"/v1/admin/models/{sha256}"))

    def export_model(self, sha256: str) -> bytes:
        """``GET /v1/admin/models/{sha256}/payload``: the weights (check the hash yourself)."""
        return self._json("GET", f"/v1/admin/models/{sha256}/payload")

    def promote_model(self, sha256: str) -> ModelVersionView:
        """``POST /v1/admin/models/{sha256}/promote``."""
        path = f"/v1/admin/models/{sha256}/promote"
        return self._model(ModelVersionView, self._json("POST", path))

    def reject_model(self, sha256: str) -> ModelVersionView:
        """``POST /v1/admin/models/{sha256}/reject``."""
        path = f"/v1/admin/models/{sha256}/reject"
        return self._model(ModelVersionView, self._json("POST", path))

    def rollback_model(self, job_id: str) -> ModelVersionView:
        """``POST /v1/admin/jobs/{job}/rollback``: the restored version."""
        path = f"/v1/admin/jobs/{job_id}/rollback"
        return self._model(ModelVersionView, self._json("POST", path))

    def diff_models(self, a: str, b: str) -> ModelDiff:
        """``GET /v1/admin/models/{a}/diff/{b}``."""
        return self._model(ModelDiff, self._json("GET", f"/v1/admin/models/{a}/diff/{b}"))


def is_retryable(exc: BaseException) -> bool:
    """True for failures worth retrying: unreachable peer, timeout, 5xx, 429."""
    return isinstance(exc, UnavailableError)


def retry_with_backoff(
    fn: Callable[[], T],
    *,
    deadline: float,
    base: float = 0.5,
    cap: float = 30.0,
    jitter: bool = True,
    rng: random.Random | None = None,
    retryable: Callable[[BaseException], bool] = is_retryable,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn`` until it succeeds, a final error (4xx) occurs, or ``deadline`` would pass.

    Waits between attempts follow capped exponential backoff with full jitter (AWS
    Architecture Blog, "Exponential Backoff and Jitter", 2015): attempt ``n`` waits
    ``uniform(0, min(cap, base·2ⁿ))`` (without ``jitter``: the upper bound itself). ``deadline``
    is absolute, in ``clock()`` seconds (unix time by default, as in task deadlines). When the
    next wait would end past the deadline the last error is raised.
    """
    rng = rng or random.Random()
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not retryable(exc):
                raise
            ceiling = min(cap, base * 2.0**attempt)
            delay = rng.uniform(0.0, ceiling) if jitter else ceiling
            if clock() + delay >= deadline:
                raise
            log.debug("attempt %d failed (%s); retrying in %.2fs", attempt + 1, exc, delay)
            sleep(delay)
            attempt += 1
