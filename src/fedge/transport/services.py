"""The interfaces the HTTP layer calls; each role implements the ones it serves.

The routers in :mod:`fedge.transport.api` do only HTTP: authenticate the peer (mTLS →
:class:`~fedge.identity.Identity`), enforce size limits before reading a body, parse JSON with
the models of :mod:`fedge.transport.messages`, call a service method, and map fedge errors to
status codes. Services hold the logic and are tested without HTTP.

- The coordinator implements :class:`DeviceService` (devices may talk to it directly) and
  :class:`UplinkService` (gateways) in one service, :class:`AdminService` and
  :class:`SecAggUplinkService` in one object each (``service.admin``, ``service.secagg_uplink``).
- A gateway implements :class:`DeviceService` for its site's devices.

Methods are synchronous (FastAPI runs them in its thread pool); they raise fedge errors:
``AuthorizationError`` → 403, ``CertificateError`` → 401, ``ValidationError`` → 400,
``ProtocolError`` (replay, stale round, out of phase, duplicate) → 409, ``UnknownNameError`` /
missing job/model → 404, ``PayloadTooLarge`` → 413.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from fedge.identity import Identity
    from fedge.transport.messages import (
        CheckInRequest,
        DeviceCertificates,
        DeviceRegistration,
        DeviceView,
        GatewayAssignments,
        GatewayCheckIn,
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

__all__ = [
    "AdminService",
    "DeviceService",
    "SecAggRelayService",
    "SecAggUplinkService",
    "UplinkService",
]


class DeviceService(Protocol):
    """What a device calls: check in, fetch a model, upload an update."""

    def checkin(self, peer: Identity, request: CheckInRequest) -> TaskAssignment | Wait:
        """Hand the device a task within the round's quota, or tell it when to come back."""
        ...

    def recheck(self, peer: Identity, request: CheckInRequest) -> TaskAssignment | None:
        """Look again for a task for a check-in held by long poll (already checked: no new
        nonce, admission or bookkeeping); None when there is still none."""
        ...

    def model(self, peer: Identity, sha256: str) -> bytes:
        """The model payload with this content hash (fedge tensor payload)."""
        ...

    def release(self, peer: Identity, sha256: str) -> ModelRelease:
        """The release signature of a model version (UnknownNameError when unsigned)."""
        ...

    def production(self, peer: Identity, job_id: str) -> ModelRelease:
        """The job's production version (UnknownNameError when it has none)."""
        ...

    def report_health(self, peer: Identity, job_id: str, report: HealthReport) -> Receipt:
        """A device's health check of the version a canary manifest told it to serve."""
        ...

    def submit_update(
        self, peer: Identity, job_id: str, round_number: int, payload: bytes
    ) -> Receipt:
        """Validate an update payload and fold it into the round's running sum."""
        ...


class UplinkService(Protocol):
    """What a gateway calls on the coordinator."""

    def gateway_checkin(self, peer: Identity, request: GatewayCheckIn) -> GatewayAssignments:
        """The gateway's quotas for the rounds now open."""
        ...

    def model(self, peer: Identity, sha256: str) -> bytes:
        """The model payload with this content hash."""
        ...

    def release(self, peer: Identity, sha256: str) -> ModelRelease:
        """The release signature of a model version (UnknownNameError when unsigned)."""
        ...

    def production(self, peer: Identity, job_id: str) -> ModelRelease:
        """The job's production version (UnknownNameError when it has none)."""
        ...

    def report_health(self, peer: Identity, job_id: str, report: HealthReport) -> Receipt:
        """A canary device's health report, forwarded by its gateway (``device_id`` set)."""
        ...

    def submit_partial(
        self, peer: Identity, job_id: str, round_number: int, payload: bytes
    ) -> Receipt:
        """A gateway's partial aggregate for a round; idempotent (exactly once per gateway)."""
        ...

    def register_devices(self, peer: Identity, request: DeviceCertificates) -> DeviceRegistration:
        """Learn the sites of the gateway's devices from their certificates."""
        ...


class SecAggRelayService(Protocol):
    """What a device calls on its gateway during secure aggregation (the gateway relays)."""

    def secagg_join(
        self, peer: Identity, job_id: str, round_number: int, join: SecAggJoin
    ) -> Receipt:
        """Join the round's session with a key bound to the device's certificate."""
        ...

    def secagg_submit(
        self, peer: Identity, job_id: str, round_number: int, payload: bytes
    ) -> Receipt:
        """A secagg wire message of the device (advertisement, shares, masked input, unmask)."""
        ...

    def secagg_inbox(
        self, peer: Identity, job_id: str, round_number: int, after: int
    ) -> SecAggInbox:
        """The coordinator's messages for the device, from position ``after``."""
        ...


class SecAggUplinkService(Protocol):
    """What a gateway calls on the coordinator during secure aggregation."""

    def secagg_join(
        self, peer: Identity, job_id: str, round_number: int, join: SecAggJoin
    ) -> Receipt:
        """Forward a device's join."""
        ...

    def secagg_submit(
        self, peer: Identity, job_id: str, round_number: int, payload: bytes
    ) -> Receipt:
        """Forward a device's message, or deliver the site's relay sum."""
        ...

    def secagg_inbox(
        self, peer: Identity, job_id: str, round_number: int, device_id: str, after: int
    ) -> SecAggInbox:
        """Messages for one of the gateway's devices."""
        ...

    def secagg_batch(
        self, peer: Identity, job_id: str, round_number: int, batch: SecAggBatch
    ) -> SecAggBatchReceipt:
        """Many of the gateway's devices' joins and control messages, each checked alone."""
        ...

    def secagg_site_inbox(
        self, peer: Identity, job_id: str, round_number: int, after: int
    ) -> SecAggSiteInbox:
        """Messages for all of the gateway's devices, from the site cursor ``after``."""
        ...


class AdminService(Protocol):
    """What an admin certificate may do."""

    def create_job(self, peer: Identity, spec: JobSpec) -> JobView: ...
    def list_jobs(self, peer: Identity) -> list[JobView]: ...
    def get_job(self, peer: Identity, job_id: str) -> JobView: ...
    def pause_job(self, peer: Identity, job_id: str) -> JobView: ...
    def resume_job(self, peer: Identity, job_id: str) -> JobView: ...
    def list_devices(self, peer: Identity) -> list[DeviceView]: ...
    def revoke_device(self, peer: Identity, device_id: str) -> DeviceView: ...
    def model(self, peer: Identity, sha256: str) -> bytes: ...
    def list_models(self, peer: Identity, job_id: str) -> list[ModelVersionView]: ...
    def get_model(self, peer: Identity, sha256: str) -> ModelVersionView: ...
    def promote_model(self, peer: Identity, sha256: str) -> ModelVersionView: ...
    def reject_model(self, peer: Identity, sha256: str) -> ModelVersionView: ...
    def rollback_model(self, peer: Identity, job_id: str) -> ModelVersionView: ...
    def diff_models(self, peer: Identity, a: str, b: str) -> ModelDiff: ...
