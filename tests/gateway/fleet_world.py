"""A whole federation in one process: real PKI, coordinator, gateways, uplinks and device agents.

Only HTTP is left out: the links call the services with the peer's identity from its certificate,
as the routes do. The coordinator checks devices' certificates against the fleet CA (as the
process does); every role shares one injected clock, so deadlines can be passed by hand.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from fedge.coordinator import ArtifactStore, CoordinatorService, CoordinatorSettings, Store
from fedge.coordinator.secure_setup import SecAggAuthority
from fedge.device.agent import DeviceAgent
from fedge.device.backoff import Backoff
from fedge.device.collector import DemoCollector, device_share
from fedge.device.eligibility import AlwaysEligible
from fedge.device.store import LocalStore
from fedge.gateway.cache import ModelCache
from fedge.gateway.service import GatewayService
from fedge.gateway.uplink import Uplink
from fedge.identity import (
    Identity,
    RevocationChecker,
    Role,
    identity_from_certificate,
    init_pki,
    issue,
    load_certificate,
)
from fedge.privacy import PrivacyLedger
from fedge.storage.outbox import Outbox
from fedge.transport import messages as m

TASK = "digits_mlp"


@dataclass
class Clock:
    """One clock for every role; tests move it past deadlines."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


class ToCoordinator:
    """A gateway's uplink to the coordinator service, in process."""

    def __init__(self, svc: CoordinatorService, gw: Identity) -> None:
        self.svc, self.gw = svc, gw

    def gateway_checkin(self, request: m.GatewayCheckIn) -> m.GatewayAssignments:
        return self.svc.gateway_checkin(self.gw, request)

    def model(self, sha256: str) -> bytes:
        return self.svc.model(self.gw, sha256)

    def submit_partial(self, job_id: str, round_number: int, payload: bytes) -> m.Receipt:
        return self.svc.submit_partial(self.gw, job_id, round_number, payload)

    def register_devices(self, request: m.DeviceCertificates) -> m.DeviceRegistration:
        return self.svc.register_devices(self.gw, request)


class ToGateway:
    """A device's link to its gateway, in process."""

    def __init__(self, gateway: GatewayService, peer: Identity) -> None:
        self.gateway, self.peer = gateway, peer

    def checkin(self, request: m.CheckInRequest) -> m.TaskAssignment | m.Wait:
        return self.gateway.checkin(self.peer, request)

    def model(self, sha256: str) -> bytes:
        return self.gateway.model(self.peer, sha256)

    def release(self, sha256: str) -> m.ModelRelease:
        return self.gateway.release(self.peer, sha256)

    def submit_update(self, job_id: str, round_number: int, payload: bytes) -> m.Receipt:
        return self.gateway.submit_update(self.peer, job_id, round_number, payload)


@dataclass
class Site:
    gateway: GatewayService
    uplink: Uplink


class World:
    """``sites``: site -> (gateway id, its devices' labels by device id)."""

    def __init__(self, root: Path, sites: dict[str, tuple[str, dict[str, dict[str, str]]]]) -> None:
        self.root, self.clock = root, Clock()
        self.pki = init_pki(root / "pki", "fleet")
        issue(self.pki.directory, Role.COORDINATOR, "coordinator")
        issue(self.pki.directory, Role.ADMIN, "admin")
        for site, (gw, devices) in sites.items():
            issue(self.pki.directory, Role.GATEWAY, gw, site=site)
            for device in devices:
                issue(self.pki.directory, Role.DEVICE, device, site=site)
        ca = load_certificate(self.pki.ca_cert)
        authority = SecAggAuthority.from_files(
            self.pki.ca_cert,
            self.pki.cert_for("coordinator"),
            self.pki.key_for("coordinator"),
            RevocationChecker(self.pki.crl, ca),
        )
        self.svc = CoordinatorService(
            Store(f"sqlite:///{root / 'coord.db'}"),
            ArtifactStore(root / "artifacts"),
            CoordinatorSettings(poll_interval_s=0.2, max_consecutive_abandoned=5),
            self.clock,
            secagg=authority,  # device certificates are checked against the fleet CA
        )
        self.admin = self.identity("admin")
        self.sites: dict[str, Site] = {}
        self.agents: dict[str, DeviceAgent] = {}
        index = 0
        for site, (gw, devices) in sites.items():
            link = ToCoordinator(self.svc, self.identity(gw))
            gateway = GatewayService(
                gateway_id=gw,
                site=site,
                cache=ModelCache(root / gw / "models", link.model),
                outbox=Outbox(root / gw / "outbox.sqlite"),
                clock=self.clock,
            )
            self.sites[site] = Site(gateway, Uplink(gateway, link))
            for device, labels in devices.items():
                self.agents[device] = self._agent(device, gateway, labels, index)
                index += 1

    def identity(self, name: str) -> Identity:
        return identity_from_certificate(self.pki.cert_for(name).read_bytes())

    def _agent(
        self, name: str, gateway: GatewayService, labels: dict[str, str], index: int
    ) -> DeviceAgent:
        store = LocalStore(self.root / f"{name}-data.sqlite", retention_s=3600)
        x, y = device_share(TASK, 8, index, seed=0)
        DemoCollector(store, x, y, rows_per_tick=len(y)).tick()
        return DeviceAgent(
            device_id=name,
            link=ToGateway(gateway, self.identity(name)),
            store=store,
            policy=AlwaysEligible(),
            ledger=PrivacyLedger(self.root / f"{name}-privacy.sqlite", 10.0),
            outbox=Outbox(self.root / f"{name}-outbox.sqlite"),
            labels=labels,
            backoff=Backoff(rng=random.Random(index)),
            clock=self.clock,
        )

    def gateways_check_in(self) -> None:
        """Every gateway's uplink checks in once (labels and registrations go up, quotas and
        revocations come down, new rounds' models are fetched)."""
        for site in self.sites.values():
            site.uplink.checkin_once()

    def gateways_send(self) -> None:
        for site in self.sites.values():
            site.uplink.send_once()

    def participants(self, job: str, number: int) -> set[str]:
        return {p.device_id for p in self.svc.store.participants(job, number)}

    def close(self) -> None:
        for agent in self.agents.values():
            agent.outbox.close()
            agent.ledger.close()
            agent.store.close()
        for site in self.sites.values():
            site.gateway.outbox.close()
        self.svc.store.close()


def job(**over: object) -> m.JobSpec:
    """A one-round job on the test task; ``over`` as in JobSpec."""
    base: dict[str, object] = {
        "name": "digits",
        "task": TASK,
        "rounds": 1,
        "devices_per_round": 3,
        "over_selection": 1.0,
        "min_devices": 2,
        "training_deadline_s": 60.0,
        "report_deadline_s": 30.0,
        "plan": m.TrainingPlan(epochs=1, batch_size=20, lr=0.1),
        "seed": 0,
    }
    base.update(over)
    return m.JobSpec.model_validate(base)
