"""Secure aggregation across the three roles' services, in process: real sessions, real crypto.

Devices run :func:`fedge.device.secure.run_secure_round` in threads against a
:class:`~fedge.gateway.secure.SecureRelay` per site, which relays to a
:class:`~fedge.coordinator.CoordinatorService`; only HTTP is left out (links call the services
with the peer's identity, as the routes do). The committed model must equal the plain FedAvg of
the same updates within the quantisation bound.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.coordinator import ArtifactStore, CoordinatorService, CoordinatorSettings, Store
from fedge.coordinator.secure_setup import SecAggAuthority, SecureSettings
from fedge.core.params import Params, ParamSpec
from fedge.core.serde import decode_params
from fedge.device import secure as device_secure
from fedge.device.secure import SecAggCredentials, run_secure_round, secure_vector
from fedge.errors import (
    AuthorizationError,
    FedgeError,
    ProtocolError,
    ValidationError,
)
from fedge.gateway.cache import ModelCache
from fedge.gateway.secure import SecureRelay
from fedge.gateway.service import GatewayService
from fedge.identity import (
    Identity,
    RevocationChecker,
    Role,
    identity_from_certificate,
    init_pki,
    issue,
    load_certificate,
)
from fedge.secagg import DeviceSession, from_wire
from fedge.storage.outbox import Outbox
from fedge.transport import messages as m

from .conftest import identity

ADMIN = identity(Role.ADMIN, "admin")
DROPPING = {"phase_timeout_s": 3.0, "max_examples": 100}  # a dropout costs one phase timeout
SITES = {"s1": "gw-a", "s2": "gw-b"}


@dataclass
class Fleet:
    """A real PKI: coordinator, two gateways, three devices per site."""

    root: Path
    devices: dict[str, str] = field(default_factory=dict)  # device -> site

    def __post_init__(self) -> None:
        self.paths = init_pki(self.root / "pki", "fleet")
        issue(self.paths.directory, Role.COORDINATOR, "coordinator")
        for site, gw in SITES.items():
            issue(self.paths.directory, Role.GATEWAY, gw, site=site)
            for i in range(3):
                name = f"d-{site}-{i}"
                issue(self.paths.directory, Role.DEVICE, name, site=site)
                self.devices[name] = site

    def cert(self, name: str) -> Path:
        return self.paths.cert_for(name)

    def identity(self, name: str) -> Identity:
        return identity_from_certificate(self.cert(name).read_bytes())

    def credentials(self, name: str) -> SecAggCredentials:
        return SecAggCredentials.from_files(
            self.paths.ca_cert, self.cert(name), self.paths.key_for(name)
        )

    def authority(self) -> SecAggAuthority:
        ca = load_certificate(self.paths.ca_cert)
        return SecAggAuthority.from_files(
            self.paths.ca_cert,
            self.cert("coordinator"),
            self.paths.key_for("coordinator"),
            RevocationChecker(self.paths.crl, ca),
        )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return Fleet(tmp_path_factory.mktemp("fleet"))


class ToCoordinator:
    """A gateway's uplink, in process; records every byte it carried (both directions)."""

    def __init__(self, svc: CoordinatorService, gw: Identity) -> None:
        self.svc, self.gw = svc, gw
        self.carried: list[bytes] = []

    def relay_secagg_join(self, job: str, rnd: int, join: m.SecAggJoin) -> m.Receipt:
        return self.svc.secagg_uplink.secagg_join(self.gw, job, rnd, join)

    def relay_secagg_submit(self, job: str, rnd: int, payload: bytes) -> m.Receipt:
        self.carried.append(payload)
        return self.svc.secagg_uplink.secagg_submit(self.gw, job, rnd, payload)

    def relay_secagg_inbox(self, job: str, rnd: int, device: str, after: int) -> m.SecAggInbox:
        box = self.svc.secagg_uplink.secagg_inbox(self.gw, job, rnd, device, after)
        self.carried.extend(base64.b64decode(x) for x in box.messages)
        return box

    def relay_secagg_batch(self, job: str, rnd: int, batch: m.SecAggBatch) -> m.SecAggBatchReceipt:
        self.carried.extend(base64.b64decode(x.message) for x in batch.messages)
        return self.svc.secagg_uplink.secagg_batch(self.gw, job, rnd, batch)

    def relay_secagg_site_inbox(self, job: str, rnd: int, after: int) -> m.SecAggSiteInbox:
        box = self.svc.secagg_uplink.secagg_site_inbox(self.gw, job, rnd, after)
        self.carried.extend(base64.b64decode(x.message) for x in box.messages)
        return box


class ToGateway:
    """A device's link to its gateway, in process; ``drop_on`` makes it vanish at a message."""

    def __init__(self, relay: SecureRelay, peer: Identity, drop_on: str | None = None) -> None:
        self.relay, self.peer, self.drop_on = relay, peer, drop_on

    def secagg_join(self, job: str, rnd: int, join: m.SecAggJoin) -> m.Receipt:
        return self.relay.secagg_join(self.peer, job, rnd, join)

    def secagg_submit(self, job: str, rnd: int, payload: bytes) -> m.Receipt:
        if self.drop_on is not None and from_wire(payload).kind == self.drop_on:
            raise _DroppedError(self.drop_on)
        return self.relay.secagg_submit(self.peer, job, rnd, payload)

    def secagg_inbox(self, job: str, rnd: int, after: int) -> m.SecAggInbox:
        return self.relay.secagg_inbox(self.peer, job, rnd, after)


class _DroppedError(FedgeError):
    pass


@dataclass
class World:
    svc: CoordinatorService
    gateways: dict[str, GatewayService]
    relays: dict[str, SecureRelay]
    uplinks: dict[str, ToCoordinator]
    fleet: Fleet

    def close(self) -> None:
        self.svc.store.close()
        for g in self.gateways.values():
            g.outbox.close()


def build_world(tmp: Path, fleet: Fleet) -> World:
    settings = CoordinatorSettings(poll_interval_s=0.2, max_consecutive_abandoned=5)
    svc = CoordinatorService(
        Store(f"sqlite:///{tmp / 'coord.db'}"),
        ArtifactStore(tmp / "artifacts"),
        settings,
        secagg=fleet.authority(),
    )
    gateways, relays, uplinks = {}, {}, {}
    for site, gw_name in SITES.items():
        gw = fleet.identity(gw_name)
        link = ToCoordinator(svc, gw)
        service = GatewayService(
            gateway_id=gw_name,
            site=site,
            cache=ModelCache(tmp / gw_name / "models", lambda sha, gw=gw: svc.model(gw, sha)),
            outbox=Outbox(tmp / gw_name / "outbox.sqlite"),
        )
        gateways[site], relays[site], uplinks[site] = service, SecureRelay(service, link), link
    return World(svc, gateways, relays, uplinks, fleet)


def job_spec(**over: Any) -> m.JobSpec:
    base: dict[str, Any] = {
        "name": "secure",
        "task": "digits_mlp",
        "rounds": 1,
        "devices_per_round": 6,
        "over_selection": 1.0,
        "min_devices": 3,
        "training_deadline_s": 30.0,
        "seed": 0,
        # phases close as soon as everyone answered; the timeout only matters for dropouts
        "secure_aggregation": {"phase_timeout_s": 10.0, "max_examples": 100},
    }
    base.update(over)
    return m.JobSpec.model_validate(base)


def hand_out(world: World) -> dict[str, m.TaskAssignment]:
    """Gateways check in (twice: report, then fetch quotas); every device gets its task."""
    svc = world.svc
    for site in world.gateways:
        gw = world.fleet.identity(SITES[site])
        req = m.GatewayCheckIn(
            gateway_id=gw.name, site=site, nonce=m.new_nonce(), online_devices=3, eligible_devices=3
        )
        svc.gateway_checkin(gw, req)
    svc.tick()
    for site, service in world.gateways.items():
        gw = world.fleet.identity(SITES[site])
        req = m.GatewayCheckIn(
            gateway_id=gw.name, site=site, nonce=m.new_nonce(), online_devices=3, eligible_devices=3
        )
        for a in service.apply_assignments(svc.gateway_checkin(gw, req)):
            service.cache.get(a.model_sha256)  # pre-fetched for the site, as the uplink does
    tasks = {}
    for device, site in world.fleet.devices.items():
        request = m.CheckInRequest(
            device_id=device, nonce=m.new_nonce(), eligibility=m.Eligibility(num_examples=50)
        )
        task = world.gateways[site].checkin(world.fleet.identity(device), request)
        assert isinstance(task, m.TaskAssignment) and task.secagg is not None
        tasks[device] = task
    return tasks


def random_delta(spec: ParamSpec, seed: int) -> Params:
    rng = np.random.default_rng(seed)
    return {
        n: (0.01 * rng.standard_normal(s)).astype(np.float32)
        for n, s in zip(spec.names, spec.shapes, strict=True)
    }


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[DeviceSession]:
    """Every DeviceSession the devices create (to look at their secrets afterwards)."""
    made: list[DeviceSession] = []

    class Recording(DeviceSession):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(device_secure, "DeviceSession", Recording)
    return made


def run_round(
    world: World,
    tasks: dict[str, m.TaskAssignment],
    drop_on: dict[str, str],
    seed: int = 1,
    vector: Callable[[Params, int, m.TaskAssignment], np.ndarray] | None = None,
    scale: float = 1.0,
) -> tuple[dict[str, tuple[str, str] | BaseException], dict[str, tuple[Params, int]]]:
    """Devices run the protocol in threads while the coordinator ticks and relays flush.

    ``vector`` makes a device's secure vector (default: :func:`secure_vector`); every random
    delta is multiplied by ``scale``.
    """
    rt = world.svc.driver.jobs["secure"]
    spec = rt.param_spec
    number = world.svc.driver.live["secure"].number
    updates = {
        d: ({n: scale * a for n, a in random_delta(spec, seed + i).items()}, 20 + 10 * i)
        for i, d in enumerate(sorted(tasks))
    }
    outcomes: dict[str, tuple[str, str] | BaseException] = {}
    stop = threading.Event()

    def device(name: str) -> None:
        site = world.fleet.devices[name]
        delta, examples = updates[name]
        task = tasks[name]
        assert task.secagg is not None
        link = ToGateway(world.relays[site], world.fleet.identity(name), drop_on.get(name))
        try:
            vec = (
                secure_vector(delta, examples, task.secagg)
                if vector is None
                else vector(delta, examples, task)
            )
            outcomes[name] = run_secure_round(link, task, name, vec, world.fleet.credentials(name))
        except BaseException as exc:
            outcomes[name] = exc

    def background() -> None:
        while not stop.wait(0.05):
            world.svc.tick()
            for relay in world.relays.values():
                relay.flush_due()

    ticker = threading.Thread(target=background, daemon=True)
    ticker.start()
    threads = [threading.Thread(target=device, args=(d,), daemon=True) for d in tasks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline:
        live = world.svc.driver.live.get("secure")
        if live is None or live.number != number:
            break
        time.sleep(0.05)
    stop.set()
    ticker.join(timeout=10)
    return outcomes, updates


def committed(world: World) -> tuple[m.RoundView, Params]:
    view = world.svc.admin.get_job(ADMIN, "secure")
    rnd = view.rounds[-1]
    assert rnd.state == "committed", rnd.reason
    assert rnd.model_sha256 is not None
    params, _ = decode_params(world.svc.model(ADMIN, rnd.model_sha256))
    return rnd, params


def fedavg(base: Params, updates: dict[str, tuple[Params, int]], who: list[str]) -> Params:
    cap = 100
    weights = {d: min(updates[d][1], cap) / cap for d in who}
    total = sum(weights.values())
    return {
        n: base[n] + sum(weights[d] * updates[d][0][n].astype(np.float64) for d in who) / total
        for n in base
    }


@pytest.fixture
def world(tmp_path: Path, fleet: Fleet) -> Iterator[World]:
    w = build_world(tmp_path, fleet)
    yield w
    w.close()


def test_secure_round_commits_the_fedavg_of_all_devices(
    world: World, sessions: list[DeviceSession]
) -> None:
    world.svc.admin.create_job(ADMIN, job_spec())
    base = {k: v.copy() for k, v in world.svc.driver.jobs["secure"].state.params.items()}
    tasks = hand_out(world)
    outcomes, updates = run_round(world, tasks, drop_on={})
    assert all(o == ("done", "") for o in outcomes.values()), outcomes
    rnd, params = committed(world)
    assert rnd.participants == 6 and rnd.gateways_reported == 2
    assert {p.device_id for p in world.svc.store.participants("secure", 1)} == set(updates)
    expected = fedavg(base, updates, sorted(updates))
    # step = 2/levels per device with levels = (2^32 - 1) // 7; weighted mean error << 1e-6
    for n in base:
        np.testing.assert_allclose(params[n], expected[n], atol=2e-6)

    # The gateways carried only masked vectors and sealed shares: no plaintext share of any
    # device appears in anything they forwarded or fetched, and each sent ONE vector upstream.
    assert len(sessions) == 6
    secrets = [s for sess in sessions for pair in sess._held.values() for s in pair]
    assert secrets and all(len(s) == 33 for s in secrets)
    for site, uplink in world.uplinks.items():
        carried = b"".join(uplink.carried) + b"".join(world.relays[site].forwarded)
        assert not any(s in carried for s in secrets)
        kinds = [from_wire(x).kind for x in uplink.carried]
        assert kinds.count("relay_sum") == 1 and "masked_input" not in kinds


def test_device_dropping_after_masked_input_still_counts(world: World) -> None:
    world.svc.admin.create_job(ADMIN, job_spec(secure_aggregation=DROPPING))
    base = {k: v.copy() for k, v in world.svc.driver.jobs["secure"].state.params.items()}
    tasks = hand_out(world)
    outcomes, updates = run_round(world, tasks, drop_on={"d-s1-0": "unmask_response"})
    assert isinstance(outcomes["d-s1-0"], _DroppedError)
    rnd, params = committed(world)
    assert rnd.participants == 6  # its masked input is in; its neighbours unmask it
    expected = fedavg(base, updates, sorted(updates))
    for n in base:
        np.testing.assert_allclose(params[n], expected[n], atol=2e-6)


def test_device_dropping_before_masked_input_is_left_out(world: World) -> None:
    world.svc.admin.create_job(ADMIN, job_spec(secure_aggregation=DROPPING))
    base = {k: v.copy() for k, v in world.svc.driver.jobs["secure"].state.params.items()}
    tasks = hand_out(world)
    outcomes, updates = run_round(world, tasks, drop_on={"d-s2-1": "masked_input"})
    assert isinstance(outcomes["d-s2-1"], _DroppedError)
    rnd, params = committed(world)
    assert rnd.participants == 5
    expected = fedavg(base, updates, sorted(d for d in updates if d != "d-s2-1"))
    for n in base:
        np.testing.assert_allclose(params[n], expected[n], atol=2e-6)


def test_too_few_devices_abandon_the_round(world: World) -> None:
    world.svc.admin.create_job(ADMIN, job_spec(rounds=2, secure_aggregation=DROPPING))
    tasks = hand_out(world)
    drop = {d: "key_advertisement" for d in list(tasks)[:4]}
    run_round(world, tasks, drop_on=drop)
    view = world.svc.admin.get_job(ADMIN, "secure")
    assert view.rounds[0].state == "abandoned"
    assert "secure aggregation abandoned" in view.rounds[0].reason
    assert view.rounds[0].model_sha256 is None


def _join(
    fleet: Fleet, device: str, job: str = "secure", rnd: int = 1, **over: Any
) -> m.SecAggJoin:
    from fedge.identity.binding import binding_message, sign_key_binding

    key = bytes(range(32))
    proof = sign_key_binding(
        fleet.paths.key_for(over.pop("signer", device)),
        binding_message(Role.DEVICE, device, job, over.pop("bound_round", rnd), key),
    )
    binding = m.KeyBinding(
        role="device",
        name=device,
        identity_key=base64.b64encode(key).decode(),
        certificate=fleet.cert(over.pop("cert_of", device)).read_text(),
        proof=base64.b64encode(proof).decode(),
    )
    return m.SecAggJoin(
        job_id=job, round=rnd, device_id=device, nonce=m.new_nonce(), binding=binding
    )


def test_coordinator_refuses_forged_foreign_and_replayed_joins(world: World) -> None:
    world.svc.admin.create_job(ADMIN, job_spec())
    hand_out(world)
    svc, fleet = world.svc, world.fleet
    gw_a = fleet.identity("gw-a")
    with pytest.raises(AuthorizationError, match="not signed by its certificate"):
        svc.secagg_uplink.secagg_join(gw_a, "secure", 1, _join(fleet, "d-s1-0", signer="d-s1-1"))
    with pytest.raises(AuthorizationError, match="not signed by its certificate"):
        svc.secagg_uplink.secagg_join(gw_a, "secure", 1, _join(fleet, "d-s1-0", bound_round=7))
    with pytest.raises(AuthorizationError, match="certificate is of"):
        svc.secagg_uplink.secagg_join(gw_a, "secure", 1, _join(fleet, "d-s1-0", cert_of="d-s1-1"))
    with pytest.raises(AuthorizationError, match="relays only for site"):
        svc.secagg_uplink.secagg_join(gw_a, "secure", 1, _join(fleet, "d-s2-0"))
    with pytest.raises(ProtocolError, match="stale round"):
        svc.secagg_uplink.secagg_join(gw_a, "secure", 2, _join(fleet, "d-s1-0", rnd=2))
    join = _join(fleet, "d-s1-0")
    assert svc.secagg_uplink.secagg_join(gw_a, "secure", 1, join).accepted
    assert svc.secagg_uplink.secagg_join(gw_a, "secure", 1, join).duplicate
    with pytest.raises(ProtocolError, match="already joined"):
        svc.secagg_uplink.secagg_join(gw_a, "secure", 1, _join(fleet, "d-s1-0"))
    with pytest.raises(ValidationError):
        svc.secagg_uplink.secagg_submit(gw_a, "secure", 1, b"not a message")


def test_gateway_refuses_impersonation_and_unknown_rounds(world: World) -> None:
    world.svc.admin.create_job(ADMIN, job_spec())
    hand_out(world)
    relay = world.relays["s1"]
    fleet = world.fleet
    me = fleet.identity("d-s1-0")
    with pytest.raises(AuthorizationError, match="only join as itself"):
        relay.secagg_join(me, "secure", 1, _join(fleet, "d-s1-1"))
    with pytest.raises(ProtocolError, match="no secure aggregation"):
        relay.secagg_join(me, "secure", 9, _join(fleet, "d-s1-0", rnd=9))
    with pytest.raises(AuthorizationError):
        relay.secagg_join(fleet.identity("d-s2-0"), "secure", 1, _join(fleet, "d-s2-0"))
    with pytest.raises(ProtocolError, match="has not joined"):
        relay.secagg_inbox(me, "secure", 1, 0)


def test_secure_settings_are_validated() -> None:
    assert SecureSettings.parse({}).weighting == "examples"
    with pytest.raises(FedgeError, match="unknown secure_aggregation keys"):
        SecureSettings.parse({"nope": 1})
    with pytest.raises(FedgeError, match="must contain"):
        SecureSettings.parse({"clip_lo": -0.1, "clip_hi": 0.1})
    assert (
        SecureSettings.parse({"clip_lo": -0.1, "clip_hi": 0.1, "weighting": "uniform"}).extra == 0
    )


def test_secure_jobs_need_the_coordinator_pki(tmp_path: Path) -> None:
    svc = CoordinatorService(Store(f"sqlite:///{tmp_path / 'c.db'}"), ArtifactStore(tmp_path / "a"))
    with pytest.raises(ValidationError, match="without the PKI files"):
        svc.admin.create_job(ADMIN, job_spec())
    svc.store.close()
    from fedge.coordinator.jobs import validate_spec

    dp = {"mode": "central", "noise_multiplier": 1.0, "clip_norm": 1.0}
    with pytest.raises(ValidationError, match="use privacy.mode = 'distributed'"):
        validate_spec(job_spec(privacy=dp))  # central DP would show the coordinator the sum
    with pytest.raises(ValidationError, match="at least 3 devices"):
        validate_spec(job_spec(devices_per_round=2, min_devices=1))
