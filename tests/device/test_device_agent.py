"""The device agent against a real GatewayService in process: rounds, refusals, retries, privacy."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tests.coordinator.test_secure_aggregation import ADMIN as SECURE_ADMIN
from tests.coordinator.test_secure_aggregation import Fleet as SecAggFleet
from tests.coordinator.test_secure_aggregation import build_world
from tests.coordinator.test_secure_aggregation import job_spec as secure_job_spec
from tests.gateway.conftest import identity

from fedge.core.params import from_module
from fedge.core.serde import decode_arrays, encode_params
from fedge.device.agent import DeviceAgent, update_key
from fedge.device.backoff import Backoff
from fedge.device.collector import DemoCollector, device_share
from fedge.device.eligibility import AlwaysEligible
from fedge.device.store import LocalStore
from fedge.errors import FedgeError, UnavailableError
from fedge.gateway.cache import ModelCache
from fedge.gateway.secure import SecureRelay
from fedge.gateway.service import GatewayService
from fedge.identity import Identity
from fedge.privacy import PrivacyLedger
from fedge.secagg import from_wire
from fedge.storage.outbox import Outbox
from fedge.tasks import get_task
from fedge.transport.messages import (
    CheckInRequest,
    GatewayAssignments,
    GatewayCheckIn,
    PrivacyPlan,
    Receipt,
    RoundAssignment,
    SecAggInbox,
    SecAggJoin,
    TaskAssignment,
    TrainingPlan,
    Wait,
    new_nonce,
)
from fedge.transport.replay import ReplayGuard

TASK = "digits_mlp"


@pytest.fixture(scope="module")
def model() -> tuple[bytes, str]:
    import torch

    torch.manual_seed(1)
    payload = encode_params(from_module(get_task(TASK).build_model()), {"kind": "model"})
    return payload, hashlib.sha256(payload).hexdigest()


class RecordingLink:
    """The device's side of the wire, in process: records every byte the device sends."""

    def __init__(self, service: GatewayService, peer: Identity) -> None:
        self.service, self.peer = service, peer
        self.sent: list[bytes] = []
        self.down = False
        self.tamper = False

    def checkin(self, request: CheckInRequest) -> TaskAssignment | Wait:
        self.sent.append(request.model_dump_json().encode())
        if self.down:
            raise UnavailableError("gateway unreachable")
        return self.service.checkin(self.peer, request)

    def model(self, sha256: str) -> bytes:
        self.sent.append(f"GET /v1/models/{sha256}".encode())
        data = self.service.model(self.peer, sha256)
        return data[:-4] + b"\x00\x00\x80\x7f" if self.tamper else data

    def submit_update(self, job_id: str, round_number: int, payload: bytes) -> Receipt:
        self.sent.append(f"POST /v1/jobs/{job_id}/rounds/{round_number}/updates".encode())
        self.sent.append(payload)
        if self.down:
            raise UnavailableError("gateway unreachable")
        return self.service.submit_update(self.peer, job_id, round_number, payload)


def gateway(tmp_path: Path, model: tuple[bytes, str], **kw: object) -> GatewayService:
    payload, sha = model
    service = GatewayService(
        gateway_id="gw-a",
        site="site-a",
        cache=ModelCache(tmp_path / "models", {sha: payload}.__getitem__),
        outbox=Outbox(tmp_path / "gw-outbox.sqlite"),
        replay=ReplayGuard(),
    )
    now = time.time()
    a = RoundAssignment(
        job_id="job1",
        round=1,
        task_name=TASK,
        model_sha256=sha,
        quota=int(kw.get("quota", 2)),  # type: ignore[call-overload]
        training_deadline=now + 120,
        report_deadline=now + 150,
        plan=TrainingPlan(epochs=1, batch_size=10, lr=0.1),
        privacy=kw.get("privacy", PrivacyPlan()),  # type: ignore[arg-type]
    )
    service.apply_assignments(GatewayAssignments(assignments=[a], retry_after_s=1))
    service.cache.get(a.model_sha256)  # the uplink prefetches before devices get the round
    return service


def agent(
    tmp_path: Path, service: GatewayService, index: int, *, limit: float = 10.0
) -> tuple[DeviceAgent, RecordingLink]:
    name = f"dev{index}"
    store = LocalStore(tmp_path / f"{name}-data.sqlite", retention_s=3600)
    x, y = device_share(TASK, 8, index, seed=0)
    DemoCollector(store, x, y, rows_per_tick=len(y)).tick()
    link = RecordingLink(service, identity(name))
    return (
        DeviceAgent(
            device_id=name,
            link=link,
            store=store,
            policy=AlwaysEligible(),
            ledger=PrivacyLedger(tmp_path / f"{name}-privacy.sqlite", limit),
            outbox=Outbox(tmp_path / f"{name}-outbox.sqlite"),
            backoff=Backoff(rng=random.Random(0)),
        ),
        link,
    )


def test_round_through_the_gateway(tmp_path: Path, model: tuple[bytes, str]) -> None:
    service = gateway(tmp_path, model, privacy=PrivacyPlan(mode="central", clip_norm=0.5))
    agents = [agent(tmp_path, service, i)[0] for i in (0, 1)]
    for a in agents:
        assert a.step() == 0.0
        assert a.stats.delivered == 1
        assert a.outbox.pending() == 0
        assert isinstance(a.step(), float)  # the round is held: Wait (quota used) → backoff
    assert service.close_due_rounds() == ["partial/job1/1"]
    (item,) = service.outbox.due(time.time())
    arrays, meta = decode_arrays(item.payload, allowed_dtypes=frozenset({"F32"}))
    assert meta["num_accepted"] == "2"
    # under DP every clipped update weighs 1 (DP-FedAvg): the sum's sensitivity is the clip norm
    assert float(meta["total_weight"]) == 2
    norm = np.sqrt(sum(float((v**2).sum()) for v in arrays.values()))
    assert norm <= 0.5 * 2 + 1e-6  # every update was clipped to 0.5 on its device


def test_raw_data_never_leaves_the_device(tmp_path: Path, model: tuple[bytes, str]) -> None:
    """Every byte the device sends in a real round, searched for every local row and window.

    A window is searched when it holds at least two whole non-zero pixels (4-byte aligned, as
    in the row): all-blank stretches are the same bytes as any zero in a model delta and carry
    no information about the data.
    """
    service = gateway(tmp_path, model, quota=1)
    device, link = agent(tmp_path, service, 3)
    device.step()
    assert device.stats.delivered == 1
    assert sum(len(m) for m in link.sent) > 8_000  # the update went out
    assert windows_of_local_data_in(device.store, link.sent) == 0


def windows_of_local_data_in(store: LocalStore, sent: list[bytes]) -> int:
    """How many 16-byte windows of the local rows appear in ``sent`` (asserting > 10,000 were
    searched: windows of at least two whole non-zero pixels, 4-byte aligned as in the row)."""
    windows_sent = {m[i : i + 16] for m in sent for i in range(len(m) - 15)}
    x, _ = store.examples()
    rows = np.ascontiguousarray(x, dtype="<f4")
    checked = found = 0
    for row in rows:
        raw = row.tobytes()
        found += sum(raw in m for m in sent)
        for i in range(len(raw) - 15):
            first = -(-i // 4)  # first whole float inside the window
            whole = row[first : (i + 16) // 4]
            if np.count_nonzero(whole) < 2:
                continue
            checked += 1
            found += raw[i : i + 16] in windows_sent
    assert checked > 10_000
    return found


def _secagg_kind(data: bytes) -> str | None:
    try:
        return from_wire(data).kind
    except FedgeError:
        return None  # a check-in, a join, a request line: not a secagg wire message


class SecureRecordingLink(RecordingLink):
    """:class:`RecordingLink` with the secure-aggregation routes, to the site's relay."""

    def __init__(self, service: GatewayService, relay: SecureRelay, peer: Identity) -> None:
        super().__init__(service, peer)
        self.relay = relay

    def secagg_join(self, job_id: str, round_number: int, join: SecAggJoin) -> Receipt:
        self.sent.append(join.model_dump_json().encode())
        return self.relay.secagg_join(self.peer, job_id, round_number, join)

    def secagg_submit(self, job_id: str, round_number: int, payload: bytes) -> Receipt:
        self.sent.append(payload)
        return self.relay.secagg_submit(self.peer, job_id, round_number, payload)

    def secagg_inbox(self, job_id: str, round_number: int, after: int) -> SecAggInbox:
        self.sent.append(
            f"GET /v1/jobs/{job_id}/rounds/{round_number}/secagg/inbox?after={after}".encode()
        )
        return self.relay.secagg_inbox(self.peer, job_id, round_number, after)


def test_raw_data_never_leaves_the_device_under_dp_and_secure_aggregation(
    tmp_path: Path,
) -> None:
    """The same search over every byte three devices send in a secure round with distributed
    DP: check-in, model request, join (key binding), key advertisement, encrypted shares, the
    noised and masked input, unmask response and inbox reads. Real PKI, coordinator, gateway
    and relay in process; the devices are real agents training on their own stores."""
    fleet = SecAggFleet(tmp_path / "fleet")
    (tmp_path / "world").mkdir()
    world = build_world(tmp_path / "world", fleet)
    spec = secure_job_spec(
        devices_per_round=3,
        min_devices=3,
        privacy={"mode": "distributed", "clip_norm": 0.5, "noise_multiplier": 1.0},
        secure_aggregation={"phase_timeout_s": 3.0},
    )
    world.svc.admin.create_job(SECURE_ADMIN, spec)
    service, relay = world.gateways["s1"], world.relays["s1"]
    gw = fleet.identity("gw-a")  # the only gateway that reports: all three tasks are its
    for _ in range(2):
        request = GatewayCheckIn(gateway_id="gw-a", site="s1", nonce=new_nonce(),
                                 online_devices=3, eligible_devices=3)  # fmt: skip
        for a in service.apply_assignments(world.svc.gateway_checkin(gw, request)):
            service.cache.get(a.model_sha256)
        world.svc.tick()
    agents: dict[str, tuple[DeviceAgent, SecureRecordingLink]] = {}

    def device(name: str, i: int) -> None:  # its stores are its thread's (SQLite)
        store = LocalStore(tmp_path / f"{name}-data.sqlite", retention_s=3600)
        x, y = device_share(TASK, 8, i, seed=0)
        DemoCollector(store, x, y, rows_per_tick=len(y)).tick()
        link = SecureRecordingLink(service, relay, fleet.identity(name))
        agent = DeviceAgent(
            device_id=name,
            link=link,
            store=store,
            policy=AlwaysEligible(),
            ledger=PrivacyLedger(tmp_path / f"{name}-privacy.sqlite", 10.0),
            outbox=Outbox(tmp_path / f"{name}-outbox.sqlite"),
            backoff=Backoff(rng=random.Random(i)),
            secagg=fleet.credentials(name),
        )
        agents[name] = agent, link
        agent.step()
        agent.outbox.close()

    stop = threading.Event()

    def drive() -> None:  # the coordinator's ticker and the gateway's relay loop
        while not stop.wait(0.05):
            world.svc.tick()
            relay.flush_due()

    names = [f"d-s1-{i}" for i in range(3)]
    threads = [
        threading.Thread(target=device, args=(n, i), daemon=True) for i, n in enumerate(names)
    ]
    ticker = threading.Thread(target=drive, daemon=True)
    try:
        for t in [ticker, *threads]:
            t.start()
        for t in threads:
            t.join(timeout=120)
        rnd = world.svc.admin.get_job(SECURE_ADMIN, "secure").rounds[0]
    finally:
        stop.set()
        ticker.join(timeout=10)
        world.close()
    assert rnd.state == "committed" and rnd.participants == 3, rnd.reason
    for name in names:
        agent, link = agents[name]
        assert agent.stats.delivered == 1, agent.stats.last_reason
        kinds = {kind for m in link.sent if (kind := _secagg_kind(m))}
        assert kinds == {"key_advertisement", "encrypted_shares", "masked_input", "unmask_response"}
        assert sum(len(m) for m in link.sent) > 8_000  # the masked input went out
        store = LocalStore(tmp_path / f"{name}-data.sqlite", retention_s=3600)
        assert windows_of_local_data_in(store, link.sent) == 0


def test_ledger_refuses_a_task_over_the_limit(tmp_path: Path, model: tuple[bytes, str]) -> None:
    service = gateway(tmp_path, model, privacy=PrivacyPlan(epsilon_cost=2.0))
    device, _ = agent(tmp_path, service, 0, limit=1.0)
    device.step()  # the gateway sees privacy_remaining=1.0 < 2.0 and hands nothing out
    assert device.stats.tasks == 0
    task = TaskAssignment(
        job_id="job1",
        round=1,
        task_name=TASK,
        model_sha256=model[1],
        deadline=time.time() + 60,
        plan=TrainingPlan(),
        privacy=PrivacyPlan(epsilon_cost=2.0),
        nonce=new_nonce(),
    )
    assert not device.handle_task(task)  # a coordinator that asks anyway is declined
    assert device.stats.declined == 1
    assert device.outbox.pending() == 0 and device.ledger.spent("job1") == 0.0
    ok = device.handle_task(task.model_copy(update={"privacy": PrivacyPlan(epsilon_cost=0.4)}))
    assert ok and device.ledger.spent("job1") == pytest.approx(0.4)


def test_model_hash_mismatch_refused(tmp_path: Path, model: tuple[bytes, str]) -> None:
    service = gateway(tmp_path, model)
    device, link = agent(tmp_path, service, 0)
    link.tamper = True
    device.step()
    assert device.stats.refused_models == 1
    assert device.outbox.pending() == 0
    assert device.outbox.get(update_key("job1", 1)) is None


def test_update_survives_an_outage_until_the_deadline(
    tmp_path: Path, model: tuple[bytes, str]
) -> None:
    service = gateway(tmp_path, model)
    device, link = agent(tmp_path, service, 0)
    original: Callable[..., Receipt] = link.submit_update

    def flaky(job_id: str, round_number: int, payload: bytes) -> Receipt:
        link.down = True
        try:
            return original(job_id, round_number, payload)
        finally:
            link.down = False

    link.submit_update = flaky  # type: ignore[method-assign]
    delay = device.step()
    assert delay > 0 and device.outbox.pending() == 1
    link.submit_update = original  # type: ignore[method-assign]
    device.clock = lambda: time.time() + 31  # past the retry backoff, before the deadline
    device.step()
    assert device.stats.delivered == 1 and device.outbox.pending() == 0
    device.clock = lambda: time.time() + 1000  # past the deadline: nothing is left to send
    assert device.deliver_pending()
