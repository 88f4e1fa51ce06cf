"""The gateway's secure-aggregation relay against a real coordinator, in process: its traffic
upstream is per site (batched messages, one site inbox), its relay sum is durable.

Real sessions and crypto as in :mod:`test_secure_aggregation` (whose fleet, job and FedAvg
reference this module reuses); links call the services with the peer's identity, as the routes
do, and count every request a gateway makes, by route.
"""

from __future__ import annotations

import base64
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.coordinator import ArtifactStore, CoordinatorService, CoordinatorSettings, Store
from fedge.core.params import Params
from fedge.device.secure import SecAggDeviceLink, run_secure_round, secure_vector
from fedge.errors import AuthorizationError, FedgeError, UnavailableError
from fedge.gateway.cache import ModelCache
from fedge.gateway.relaysums import relay_sum_key
from fedge.gateway.secure import SecureRelay
from fedge.gateway.service import GatewayService
from fedge.identity import Identity, Role, init_pki, issue
from fedge.secagg import MaskedInput, RelaySession, RelaySum, RoundSetup, from_wire, to_wire
from fedge.storage.outbox import Outbox
from fedge.transport import messages as m

from .test_secure_aggregation import (
    ADMIN,
    DROPPING,
    SITES,
    Fleet,
    _join,
    committed,
    fedavg,
    job_spec,
    random_delta,
)

UPLINK_ROUTES = ("join", "submit", "inbox", "batch", "site_inbox")


@dataclass
class SizedFleet(Fleet):
    """The fleet of :mod:`test_secure_aggregation` with ``per_site`` devices at each site, or
    as many as ``sizes`` says."""

    per_site: int = 3
    sizes: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sizes = {site: self.sizes.get(site, self.per_site) for site in SITES}
        self.paths = init_pki(self.root / "pki", "fleet")
        issue(self.paths.directory, Role.COORDINATOR, "coordinator")
        for site, gw in SITES.items():
            issue(self.paths.directory, Role.GATEWAY, gw, site=site)
            for i in range(self.sizes[site]):
                name = f"d-{site}-{i}"
                issue(self.paths.directory, Role.DEVICE, name, site=site)
                self.devices[name] = site


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> SizedFleet:
    return SizedFleet(tmp_path_factory.mktemp("fleet"))


@pytest.fixture(scope="module")
def uneven_fleet(tmp_path_factory: pytest.TempPathFactory) -> SizedFleet:
    return SizedFleet(tmp_path_factory.mktemp("uneven-fleet"), sizes={"s1": 2, "s2": 4})


@pytest.fixture(scope="module")
def big_fleet(tmp_path_factory: pytest.TempPathFactory) -> SizedFleet:
    return SizedFleet(tmp_path_factory.mktemp("big-fleet"), per_site=8)


class Uplink:
    """A gateway's link to the coordinator, in process: counts requests by route; a route in
    ``cut`` fails as an unreachable coordinator would."""

    def __init__(self, svc: CoordinatorService, gw: Identity) -> None:
        self.svc, self.gw = svc, gw
        self.calls: Counter[str] = Counter()
        self.cut: set[str] = set()
        self.sums: list[bytes] = []  # relay sums the coordinator received from us

    def _call(self, route: str) -> None:
        self.calls[route] += 1
        if route in self.cut:
            raise UnavailableError(f"uplink of {self.gw.name} cut")

    def relay_secagg_join(self, job: str, rnd: int, join: m.SecAggJoin) -> m.Receipt:
        self._call("join")
        return self.svc.secagg_uplink.secagg_join(self.gw, job, rnd, join)

    def relay_secagg_submit(self, job: str, rnd: int, payload: bytes) -> m.Receipt:
        self._call("submit")
        receipt = self.svc.secagg_uplink.secagg_submit(self.gw, job, rnd, payload)
        if isinstance(from_wire(payload), RelaySum):
            self.sums.append(payload)
        return receipt

    def relay_secagg_inbox(self, job: str, rnd: int, device: str, after: int) -> m.SecAggInbox:
        self._call("inbox")
        return self.svc.secagg_uplink.secagg_inbox(self.gw, job, rnd, device, after)

    def relay_secagg_batch(self, job: str, rnd: int, batch: m.SecAggBatch) -> m.SecAggBatchReceipt:
        self._call("batch")
        return self.svc.secagg_uplink.secagg_batch(self.gw, job, rnd, batch)

    def relay_secagg_site_inbox(self, job: str, rnd: int, after: int) -> m.SecAggSiteInbox:
        self._call("site_inbox")
        return self.svc.secagg_uplink.secagg_site_inbox(self.gw, job, rnd, after)


class PerDeviceRelay:
    """The straightforward reference relay: each device's join, message and inbox read goes up
    on its own (the coordinator's per-device routes); masked inputs are summed here."""

    def __init__(self, gateway_id: str, link: Uplink) -> None:
        self.gateway_id, self.link = gateway_id, link
        self.joined: set[str] = set()
        self.relay: RelaySession | None = None
        self.lock = threading.Lock()

    def for_device(self, device: str) -> SecAggDeviceLink:
        relay = self

        class Link:
            def secagg_join(self, job: str, rnd: int, join: m.SecAggJoin) -> m.Receipt:
                with relay.lock:
                    relay.joined.add(device)
                return relay.link.relay_secagg_join(job, rnd, join)

            def secagg_submit(self, job: str, rnd: int, payload: bytes) -> m.Receipt:
                msg = from_wire(payload)
                if not isinstance(msg, MaskedInput):
                    return relay.link.relay_secagg_submit(job, rnd, payload)
                with relay.lock:
                    assert relay.relay is not None
                    relay.relay.receive(msg)
                    done = set(relay.relay.contributors) >= relay.joined
                    total = relay.relay.flush() if done else None
                if total is not None:
                    relay.link.relay_secagg_submit(job, rnd, to_wire(total))
                return m.Receipt(accepted=True)

            def secagg_inbox(self, job: str, rnd: int, after: int) -> m.SecAggInbox:
                box = relay.link.relay_secagg_inbox(job, rnd, device, after)
                with relay.lock:
                    for item in box.messages:
                        msg = from_wire(base64.b64decode(item))
                        if relay.relay is None and isinstance(msg, RoundSetup):
                            relay.relay = RelaySession(
                                relay.gateway_id, msg.session_id, msg.params, relay.joined
                            )
                return box

        return Link()


class _GoneError(FedgeError):
    """The device's gateway process is gone (the device gives up on the round)."""


class ToGateway:
    """A device's link to its gateway's relay, in process; fails once ``gone`` is set."""

    def __init__(self, relay: SecureRelay, peer: Identity, gone: threading.Event) -> None:
        self.relay, self.peer, self.gone = relay, peer, gone

    def _check(self) -> None:
        if self.gone.is_set():
            raise _GoneError(f"the gateway of {self.peer.name} is gone")

    def secagg_join(self, job: str, rnd: int, join: m.SecAggJoin) -> m.Receipt:
        self._check()
        return self.relay.secagg_join(self.peer, job, rnd, join)

    def secagg_submit(self, job: str, rnd: int, payload: bytes) -> m.Receipt:
        self._check()
        return self.relay.secagg_submit(self.peer, job, rnd, payload)

    def secagg_inbox(self, job: str, rnd: int, after: int) -> m.SecAggInbox:
        self._check()
        return self.relay.secagg_inbox(self.peer, job, rnd, after)


@dataclass
class World:
    svc: CoordinatorService
    fleet: SizedFleet
    root: Path
    gateways: dict[str, GatewayService] = field(default_factory=dict)
    uplinks: dict[str, Uplink] = field(default_factory=dict)
    relays: dict[str, SecureRelay] = field(default_factory=dict)  # flushed in the background
    outboxes: list[Outbox] = field(default_factory=list)

    def gateway(self, site: str, **relay_options: Any) -> tuple[GatewayService, SecureRelay]:
        """Start site's gateway on its state directory (again, after a restart)."""
        name = SITES[site]
        gw = self.fleet.identity(name)
        outbox = Outbox(self.root / name / "outbox.sqlite")
        self.outboxes.append(outbox)
        service = GatewayService(
            gateway_id=name,
            site=site,
            cache=ModelCache(self.root / name / "models", lambda sha: self.svc.model(gw, sha)),
            outbox=outbox,
        )
        link = self.uplinks[site] = Uplink(self.svc, gw)
        return service, SecureRelay(service, link, **relay_options)

    def close(self) -> None:
        self.svc.store.close()
        for outbox in self.outboxes:
            outbox.close()


@pytest.fixture
def make_world(tmp_path: Path) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(fleet: SizedFleet, *, poll_s: float = 0.2, **relay_options: Any) -> World:
        root = tmp_path / f"world-{len(made)}"
        root.mkdir()
        settings = CoordinatorSettings(poll_interval_s=poll_s, max_consecutive_abandoned=5)
        svc = CoordinatorService(
            Store(f"sqlite:///{root / 'coord.db'}"),
            ArtifactStore(root / "artifacts"),
            settings,
            secagg=fleet.authority(),
        )
        world = World(svc, fleet, root)
        for site in SITES:
            world.gateways[site], world.relays[site] = world.gateway(site, **relay_options)
        made.append(world)
        return world

    yield make
    for world in made:
        world.close()


def hand_out(world: World) -> dict[str, m.TaskAssignment]:
    """Gateways check in (report, then fetch quotas); every device of the fleet gets its task."""
    for _ in range(2):
        for site, service in world.gateways.items():
            gw = world.fleet.identity(SITES[site])
            n = world.fleet.sizes[site]
            req = m.GatewayCheckIn(
                gateway_id=gw.name,
                site=site,
                nonce=m.new_nonce(),
                online_devices=n,
                eligible_devices=n,
            )
            for a in service.apply_assignments(world.svc.gateway_checkin(gw, req)):
                service.cache.get(a.model_sha256)  # pre-fetched for the site, as the uplink does
        world.svc.tick()
    tasks = {}
    for device, site in world.fleet.devices.items():
        request = m.CheckInRequest(
            device_id=device, nonce=m.new_nonce(), eligibility=m.Eligibility(num_examples=50)
        )
        task = world.gateways[site].checkin(world.fleet.identity(device), request)
        assert isinstance(task, m.TaskAssignment) and task.secagg is not None
        tasks[device] = task
    return tasks


def secure_job(world: World, **over: Any) -> dict[str, m.TaskAssignment]:
    n = len(world.fleet.devices)
    world.svc.admin.create_job(ADMIN, job_spec(devices_per_round=n, **over))
    return hand_out(world)


def updates_for(world: World) -> dict[str, tuple[Params, int]]:
    spec = world.svc.driver.jobs["secure"].param_spec
    return {
        d: (random_delta(spec, 1 + i), 20 + 10 * i)
        for i, d in enumerate(sorted(world.fleet.devices))
    }


@contextmanager
def ticking(world: World) -> Iterator[None]:
    """The coordinator's ticker and the gateways' relay loops, in a background thread."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.05):
            world.svc.tick()
            for relay in list(world.relays.values()):
                relay.flush_due()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def run_devices(
    world: World,
    tasks: dict[str, m.TaskAssignment],
    links: Callable[[str], SecAggDeviceLink],
    updates: dict[str, tuple[Params, int]],
    *,
    seeded: bool = False,
) -> tuple[dict[str, Any], list[threading.Thread]]:
    """Start every device's side of the protocol in a thread (``seeded``: reproducible coins)."""
    outcomes: dict[str, Any] = {}

    def device(name: str, seed: int) -> None:
        task = tasks[name]
        assert task.secagg is not None
        delta, examples = updates[name]
        coins = random.Random(seed).randbytes if seeded else None
        try:
            vec = secure_vector(delta, examples, task.secagg)
            creds = world.fleet.credentials(name)
            kw = {"randbytes": coins} if coins is not None else {}
            outcomes[name] = run_secure_round(links(name), task, name, vec, creds, **kw)
        except BaseException as exc:
            outcomes[name] = exc

    threads = [
        threading.Thread(target=device, args=(d, i), daemon=True)
        for i, d in enumerate(sorted(tasks))
    ]
    for t in threads:
        t.start()
    return outcomes, threads


def finish(world: World, threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline and "secure" in world.svc.driver.live:
        time.sleep(0.05)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not check():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def device_link(world: World, gone: threading.Event | None = None) -> Callable[[str], ToGateway]:
    event = gone or threading.Event()
    return lambda d: ToGateway(world.relays[world.fleet.devices[d]], world.fleet.identity(d), event)


# -- 1. the relay sum is durable ------------------------------------------------------------------


def test_relay_sum_survives_a_gateway_restart_and_is_delivered_once(
    make_world: Callable[..., World], uneven_fleet: SizedFleet
) -> None:
    """gw-a (2 devices) forms its relay sum while its uplink is down, and dies; restarted on
    the same state directory it delivers the sum, once. Its devices lost their gateway and
    never unmask, but gw-b's 4 reach the threshold (3 of 6) for every device: the round commits
    with all 6 inputs."""
    fleet = uneven_fleet
    world = make_world(fleet)
    tasks = secure_job(world, secure_aggregation=DROPPING)
    base = {k: v.copy() for k, v in world.svc.driver.jobs["secure"].state.params.items()}
    updates = updates_for(world)
    old_uplink, old_relay = world.uplinks["s1"], world.relays["s1"]
    old_uplink.cut = {"submit"}  # gw-a's uplink drops just as its relay sum falls due
    key = relay_sum_key("secure", 1, "gw-a")
    outbox = world.gateways["s1"].outbox
    s1_gone = threading.Event()
    s1 = {d for d, site in fleet.devices.items() if site == "s1"}
    links = device_link(world)
    gone_links = device_link(world, s1_gone)
    with ticking(world):
        outcomes, threads = run_devices(
            world, tasks, lambda d: gone_links(d) if d in s1 else links(d), updates
        )
        wait_until(
            lambda: (item := outbox.get(key)) is not None and item.attempts >= 1,
            "gw-a's relay sum to fail its first delivery",
        )
        # gw-a's process dies with the sum undelivered (its devices lose their gateway) ...
        s1_gone.set()
        old_uplink.cut = set(UPLINK_ROUTES)
        del world.relays["s1"]
        # ... and starts again on the same state directory: the outbox still holds the sum
        _, restarted = world.gateway("s1")
        new_uplink = world.uplinks["s1"]
        sent: list[int] = []
        wait_until(lambda: sent.append(restarted.flush_due()) or sum(sent) > 0, "the retry")
        assert sent[-1] == 1 and restarted.flush_due() == 0  # once, when its retry fell due
        assert world.gateway("s1")[1].flush_due() == 0  # another restart: only a tombstone
        finish(world, threads)
    assert old_relay.flush_due() == 0  # nor would the old process send it again
    assert outbox.is_delivered(key)
    sums = [from_wire(s) for s in new_uplink.sums]
    assert len(sums) == 1 and not old_uplink.sums  # the old uplink never got it through
    assert isinstance(sums[0], RelaySum) and set(sums[0].contributors) == s1
    rnd, params = committed(world)
    assert all(outcomes[d] == ("done", "") for d in fleet.devices if d not in s1), outcomes
    assert rnd.participants == 6 and rnd.gateways_reported == 2
    expected = fedavg(base, updates, sorted(updates))
    for n in base:
        np.testing.assert_allclose(params[n], expected[n], atol=2e-6)


# -- 2. control traffic goes up per site ---------------------------------------------------------


def _batched_round(world: World) -> tuple[Counter[str], Counter[str]]:
    tasks = secure_job(world)
    base = {k: v.copy() for k, v in world.svc.driver.jobs["secure"].state.params.items()}
    updates = updates_for(world)
    with ticking(world):
        outcomes, threads = run_devices(world, tasks, device_link(world), updates)
        finish(world, threads)
    assert all(o == ("done", "") for o in outcomes.values()), outcomes
    rnd, params = committed(world)
    assert rnd.participants == len(world.fleet.devices)
    expected = fedavg(base, updates, sorted(updates))
    for n in base:
        np.testing.assert_allclose(params[n], expected[n], atol=2e-6)
    return world.uplinks["s1"].calls, world.uplinks["s2"].calls


def test_secagg_requests_of_a_gateway_do_not_grow_with_its_devices(
    make_world: Callable[..., World], fleet: SizedFleet, big_fleet: SizedFleet
) -> None:
    # a phase's batch waits up to 2.5 s for a missing device; the inbox holds up to 2 s
    counts = {
        f.per_site: _batched_round(make_world(f, poll_s=2.0, linger_s=5.0))
        for f in (fleet, big_fleet)
    }
    for per_site, per_gateway in counts.items():
        for calls in per_gateway:
            assert calls["join"] == calls["inbox"] == 0  # no per-device route was used
            assert calls["submit"] == 1  # the relay sum
            # one batch per step (join, advertise, share, unmask); one read per step's news
            assert calls["batch"] <= 5 and calls["site_inbox"] <= 8, (per_site, calls)
    small, big = (sum(c.values()) for c in (counts[3][0], counts[8][0]))
    assert big <= small + 2  # 8 devices a site cost what 3 do ...
    assert big < 8 * 4  # ... where one request per device and step would be 8 x 4 and more


def _reference_link(
    reference: dict[str, PerDeviceRelay], fleet: SizedFleet, device: str
) -> SecAggDeviceLink:
    return reference[fleet.devices[device]].for_device(device)


def test_batched_round_equals_the_per_device_round(
    make_world: Callable[..., World], fleet: SizedFleet
) -> None:
    """Same devices, same updates, same coins: the committed model is bit for bit the same."""
    models = []
    for batched in (True, False):
        world = make_world(fleet)
        tasks = secure_job(world)
        updates = updates_for(world)
        if batched:
            links: Callable[[str], SecAggDeviceLink] = device_link(world)
        else:
            world.relays.clear()  # nothing batches: the reference relay forwards at once
            reference = {s: PerDeviceRelay(SITES[s], world.uplinks[s]) for s in SITES}
            links = partial(_reference_link, reference, fleet)
        with ticking(world):
            outcomes, threads = run_devices(world, tasks, links, updates, seeded=True)
            finish(world, threads)
        assert all(o == ("done", "") for o in outcomes.values()), outcomes
        models.append(committed(world)[1])
        calls = world.uplinks["s1"].calls
        if batched:
            assert calls["join"] == calls["inbox"] == 0
        else:
            assert calls["batch"] == calls["site_inbox"] == 0 and calls["join"] == 3
    for name in models[0]:
        np.testing.assert_array_equal(models[0][name], models[1][name])


def test_batch_items_are_checked_one_by_one(
    make_world: Callable[..., World], fleet: SizedFleet
) -> None:
    world = make_world(fleet)
    secure_job(world)
    svc, gw_a = world.svc, fleet.identity("gw-a")
    bogus = base64.b64encode(b"not a secagg message").decode()
    fake_sum = to_wire(RelaySum(b"s" * 32, "gw-a", ("d-s1-0",), np.zeros(3, dtype=np.uint32)))
    batch = m.SecAggBatch(
        joins=[
            _join(fleet, "d-s1-0"),
            _join(fleet, "d-s1-1", signer="d-s1-2"),  # forged proof
            _join(fleet, "d-s2-0"),  # another site's device
        ],
        messages=[
            m.SecAggRelayed(device_id="d-s1-0", message=bogus),
            m.SecAggRelayed(device_id="d-s1-0", message=base64.b64encode(fake_sum).decode()),
        ],
    )
    receipt = svc.secagg_uplink.secagg_batch(gw_a, "secure", 1, batch)
    ok, forged, foreign = receipt.joins
    assert ok.accepted and not ok.duplicate
    assert (forged.accepted, forged.status) == (False, 403) and "not signed" in forged.reason
    assert (foreign.status, foreign.error) == (403, "forbidden")
    assert "relays only for site" in foreign.reason
    garbage, relay_sum = receipt.messages
    assert (garbage.accepted, garbage.status) == (False, 400)
    assert relay_sum.status == 400 and "relay sums go to" in relay_sum.reason
    assert svc.driver.live["secure"].secure is not None
    assert svc.driver.live["secure"].secure.joined == {"d-s1-0"}  # only the good item counted
    again = svc.secagg_uplink.secagg_batch(gw_a, "secure", 1, m.SecAggBatch(joins=[batch.joins[0]]))
    assert again.joins[0].duplicate
    box = svc.secagg_uplink.secagg_site_inbox(fleet.identity("gw-b"), "secure", 1, 0)
    assert box.messages == [] and box.state == "joining"  # gw-b's log holds none of gw-a's


def test_gateway_tells_a_device_the_coordinator_refused_its_join(
    make_world: Callable[..., World], fleet: SizedFleet
) -> None:
    world = make_world(fleet, linger_s=0.0)  # every item goes up at once
    secure_job(world)
    relay, me = world.relays["s1"], fleet.identity("d-s1-0")
    forged = _join(fleet, "d-s1-0", signer="d-s1-1")
    assert relay.secagg_join(me, "secure", 1, forged).accepted  # the gateway cannot tell
    assert world.uplinks["s1"].calls["batch"] == 1
    with pytest.raises(AuthorizationError, match="coordinator refused it: .*not signed"):
        relay.secagg_inbox(me, "secure", 1, 0)
    assert relay.secagg_join(me, "secure", 1, _join(fleet, "d-s1-0")).accepted  # may try again
    box = relay.secagg_inbox(me, "secure", 1, 0)
    assert box.state == "joining" and world.uplinks["s1"].calls["site_inbox"] == 1
