"""A real fleet PKI, in-test services and a real mutual-TLS server on 127.0.0.1:0."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fedge.core.serde import decode_arrays, encode_arrays
from fedge.errors import UnknownNameError, ValidationError
from fedge.identity import Identity, PeerVerifier, PkiPaths, Role, authorize, init_pki, issue
from fedge.transport.api import build_app
from fedge.transport.client import FedgeClient
from fedge.transport.limits import BodyLimits
from fedge.transport.messages import (
    CheckInRequest,
    DeviceView,
    GatewayAssignments,
    GatewayCheckIn,
    JobSpec,
    JobView,
    Receipt,
    TaskAssignment,
    Wait,
)
from fedge.transport.replay import ReplayGuard
from fedge.transport.server import RunningServer, ServerTls, start_server

MODEL = encode_arrays({"w": np.arange(6, dtype=np.float32)}, {"kind": "model"})
MODEL_SHA = hashlib.sha256(MODEL).hexdigest()
UPDATE_LIMIT = 64 * 1024


def update_payload(nonce: str, *, device: str = "dev-1", n: int = 6) -> bytes:
    meta = {"kind": "update", "job": "job1", "round": "1", "device": device, "nonce": nonce}
    return encode_arrays({"w": np.ones(n, dtype=np.float32)}, meta)


class FakeFleet:
    """A small DeviceService + UplinkService + AdminService that records what reached it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Identity, object]] = []
        self.replay = ReplayGuard(ttl_s=60)
        self._lock = threading.Lock()

    def _record(self, what: str, peer: Identity, detail: object) -> None:
        with self._lock:
            self.calls.append((what, peer, detail))

    def names(self) -> list[str]:
        with self._lock:
            return [c[0] for c in self.calls]

    # DeviceService
    def checkin(self, peer: Identity, request: CheckInRequest) -> TaskAssignment | Wait:
        self._record("checkin", peer, request)
        authorize(peer, roles={Role.DEVICE}, name=request.device_id)
        self.replay.check(peer.name, request.nonce)
        return Wait(retry_after_s=5.0, reason="no round open")

    def model(self, peer: Identity, sha256: str) -> bytes:
        self._record("model", peer, sha256)
        if sha256 != MODEL_SHA:
            raise UnknownNameError(f"no model {sha256}")
        return MODEL

    def submit_update(
        self, peer: Identity, job_id: str, round_number: int, payload: bytes
    ) -> Receipt:
        self._record("update", peer, (job_id, round_number, len(payload)))
        arrays, meta = decode_arrays(payload)
        if meta.get("device") != peer.name:
            raise ValidationError("update payload names another device")
        self.replay.check(peer.name, meta["nonce"])
        return Receipt(accepted=True, reason=f"{sum(a.size for a in arrays.values())} values")

    # UplinkService
    def gateway_checkin(self, peer: Identity, request: GatewayCheckIn) -> GatewayAssignments:
        self._record("gateway_checkin", peer, request)
        return GatewayAssignments(assignments=[], retry_after_s=1.0)

    def submit_partial(
        self, peer: Identity, job_id: str, round_number: int, payload: bytes
    ) -> Receipt:
        self._record("partial", peer, (job_id, round_number, len(payload)))
        decode_arrays(payload, allowed_dtypes=frozenset({"F64"}))
        return Receipt(accepted=True)

    # AdminService
    def _job(self, job_id: str) -> JobView:
        spec = JobSpec(name=job_id, task="digits", rounds=3, devices_per_round=2)
        return JobView(id=job_id, spec=spec, state="running", current_round=1)

    def create_job(self, peer: Identity, spec: JobSpec) -> JobView:
        self._record("create_job", peer, spec)
        return JobView(id=spec.name, spec=spec, state="running", current_round=0)

    def list_jobs(self, peer: Identity) -> list[JobView]:
        return [self._job("job1")]

    def get_job(self, peer: Identity, job_id: str) -> JobView:
        if job_id != "job1":
            raise UnknownNameError(f"no job {job_id!r}")
        return self._job(job_id)

    def pause_job(self, peer: Identity, job_id: str) -> JobView:
        return self._job(job_id).model_copy(update={"state": "paused"})

    def resume_job(self, peer: Identity, job_id: str) -> JobView:
        return self._job(job_id)

    def list_devices(self, peer: Identity) -> list[DeviceView]:
        return [self.revoke_device(peer, "dev-1")]

    def revoke_device(self, peer: Identity, device_id: str) -> DeviceView:
        return DeviceView(
            id=device_id, site="a", gateway=None, last_seen=None, revoked=True,
            rounds_participated=0,
        )  # fmt: skip


@dataclass
class Fleet:
    pki: PkiPaths
    other: PkiPaths
    server: RunningServer
    service: FakeFleet

    def client(self, name: str, *, pki: PkiPaths | None = None, **kw: object) -> FedgeClient:
        paths = pki or self.pki
        return FedgeClient(
            self.server.url, ca=self.pki.ca_cert, cert=paths.cert_for(name),
            key=paths.key_for(name), timeout=10.0, **kw,  # type: ignore[arg-type]
        )  # fmt: skip


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root: Path = tmp_path_factory.mktemp("transport")
    pki = init_pki(root / "pki", "acme", validity_days=30)
    other = init_pki(root / "other", "acme", validity_days=30)
    issue(pki.directory, "coordinator", "coord")
    for name in ("dev-1", "dev-2", "dev-revoked"):
        issue(pki.directory, "device", name, site="a")
    issue(pki.directory, "gateway", "gw-a", site="a")
    issue(pki.directory, "admin", "alice")
    issue(other.directory, "device", "dev-1", site="a")
    service = FakeFleet()
    app = build_app(
        device=service, uplink=service, admin=service,
        verifier=PeerVerifier(pki.ca_cert, pki.crl),
        limits=BodyLimits(json=16 * 1024, update=UPDATE_LIMIT, partial=UPDATE_LIMIT),
    )  # fmt: skip
    tls = ServerTls(pki.ca_cert, pki.cert_for("coord"), pki.key_for("coord"), crl=pki.crl)
    server = start_server(app, "127.0.0.1", 0, tls)
    try:
        yield Fleet(pki, other, server, service)
    finally:
        server.stop()
