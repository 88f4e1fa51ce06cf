"""Long-poll check-in at a real gateway over mutual TLS: a held device gets its task as soon as
the round's model is in the site cache, the gateway holds at most ``max_held`` check-ins, and a
stopping server answers the held ones at once."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fedge.device.agent import DeviceAgent
from fedge.device.backoff import Backoff
from fedge.device.collector import DemoCollector, device_share
from fedge.device.eligibility import AlwaysEligible
from fedge.device.store import LocalStore
from fedge.gateway.cache import ModelCache
from fedge.gateway.service import GatewayService
from fedge.gateway.uplink import Uplink
from fedge.identity import PeerVerifier, PkiPaths, init_pki, issue
from fedge.privacy import PrivacyLedger
from fedge.storage.outbox import Outbox
from fedge.transport.api import build_app
from fedge.transport.client import FedgeClient
from fedge.transport.longpoll import LongPoll
from fedge.transport.messages import (
    CheckInRequest,
    Eligibility,
    RoundAssignment,
    TaskAssignment,
    Wait,
    new_nonce,
)
from fedge.transport.server import RunningServer, ServerTls, start_server

from .test_gateway_service import FakeCoordinator

DEVICES = ("dev-1", "dev-2", "dev-3")
HOLD_S = 120.0  # far longer than any wake-up needs: a task means the notification worked


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    paths = init_pki(tmp_path_factory.mktemp("lp") / "pki", "acme", validity_days=30)
    issue(paths.directory, "gateway", "gw-a", site="site-a")
    for name in DEVICES:
        issue(paths.directory, "device", name, site="site-a")
    return paths


@dataclass
class Site:
    pki: PkiPaths
    service: GatewayService
    coordinator: FakeCoordinator
    server: RunningServer
    answers: dict[str, TaskAssignment | Wait] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)

    def ask(self, device: str, wait_s: float = HOLD_S) -> None:
        """Check in from ``device`` in a thread (it may be held); the answer lands in answers."""

        def run() -> None:
            with FedgeClient(
                self.server.url, ca=self.pki.ca_cert, cert=self.pki.cert_for(device),
                key=self.pki.key_for(device), timeout=HOLD_S + 30,
            ) as client:  # fmt: skip
                request = CheckInRequest(
                    device_id=device, nonce=new_nonce(),
                    eligibility=Eligibility(num_examples=10), wait_s=wait_s,
                )  # fmt: skip
                self.answers[device] = client.checkin(request)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for t in self.threads:
            t.join(HOLD_S + 60)
        assert not any(t.is_alive() for t in self.threads)

    def open_round(self, assignment: RoundAssignment) -> None:
        """What the uplink does when the coordinator hands out a round (and then notifies)."""
        self.coordinator.assignments = [assignment]
        Uplink(self.service, self.coordinator).checkin_once()


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def coordinator(model_sha: str, model_payload: bytes) -> FakeCoordinator:
    return FakeCoordinator({model_sha: model_payload}, [])


@pytest.fixture
def make_site(
    tmp_path: Path, pki: PkiPaths, coordinator: FakeCoordinator
) -> Iterator[Callable[..., Site]]:
    sites: list[Site] = []

    def make(max_held: int = 100) -> Site:
        service = GatewayService(
            gateway_id="gw-a",
            site="site-a",
            cache=ModelCache(tmp_path / "models", coordinator.model),
            outbox=Outbox(tmp_path / "outbox.sqlite"),
            device_retry_s=7.0,
            long_poll=LongPoll(HOLD_S, max_held),
        )
        app = build_app(
            device=service, uplink=None, admin=None,
            verifier=PeerVerifier(pki.ca_cert, pki.crl), long_poll=service.long_poll,
        )  # fmt: skip
        tls = ServerTls(pki.ca_cert, pki.cert_for("gw-a"), pki.key_for("gw-a"), crl=pki.crl)
        server = start_server(app, "127.0.0.1", 0, tls, on_shutdown=service.long_poll.close)
        site = Site(pki, service, coordinator, server)
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.server.stop()


def test_a_held_device_gets_its_task_when_the_round_opens(
    make_site: Callable[..., Site], assignment: Callable[..., RoundAssignment]
) -> None:
    site = make_site()
    site.ask("dev-1")
    _until(lambda: site.service.long_poll.held == 1, "the check-in to be held")
    assert site.answers == {}  # no task yet: the gateway holds the request instead of Wait
    site.open_round(assignment(quota=2))
    site.join()
    task = site.answers["dev-1"]
    assert isinstance(task, TaskAssignment) and (task.job_id, task.round) == ("job1", 1)
    assert site.service.long_poll.held == 0


def test_the_gateway_holds_at_most_max_held_checkins(
    make_site: Callable[..., Site], assignment: Callable[..., RoundAssignment]
) -> None:
    site = make_site(max_held=2)
    site.ask("dev-1")
    site.ask("dev-2")
    _until(lambda: site.service.long_poll.held == 2, "two check-ins to be held")
    site.ask("dev-3")  # one too many: answered at once, as without long poll
    _until(lambda: "dev-3" in site.answers, "the third check-in's answer")
    third = site.answers["dev-3"]
    assert isinstance(third, Wait) and third.retry_after_s == 7.0
    assert site.service.long_poll.refused == 1 and site.service.long_poll.peak_held == 2
    site.open_round(assignment(quota=3))
    site.join()
    assert all(isinstance(site.answers[d], TaskAssignment) for d in ("dev-1", "dev-2"))


def test_a_stopping_gateway_answers_held_checkins_at_once(make_site: Callable[..., Site]) -> None:
    site = make_site()
    site.ask("dev-1")
    _until(lambda: site.service.long_poll.held == 1, "the check-in to be held")
    site.server.stop()
    site.join()
    answer = site.answers["dev-1"]
    assert isinstance(answer, Wait) and answer.retry_after_s == 0.0  # "ask again now"


def test_a_device_that_does_not_offer_to_wait_is_answered_at_once(
    make_site: Callable[..., Site],
) -> None:
    site = make_site()
    site.ask("dev-1", wait_s=0.0)  # an older device: no wait_s
    site.join()
    answer = site.answers["dev-1"]
    assert isinstance(answer, Wait) and answer.retry_after_s == 7.0
    assert site.service.long_poll.peak_held == 0


def _agent(site: Site, tmp_path: Path, long_poll_s: float) -> tuple[DeviceAgent, FedgeClient]:
    tmp_path.mkdir(parents=True)
    store = LocalStore(tmp_path / "dev-1-data.sqlite", retention_s=3600)
    x, y = device_share("digits_mlp", 8, 0, seed=0)
    DemoCollector(store, x, y, rows_per_tick=len(y)).tick()
    client = FedgeClient(
        site.server.url, ca=site.pki.ca_cert, cert=site.pki.cert_for("dev-1"),
        key=site.pki.key_for("dev-1"), timeout=30,
    )  # fmt: skip
    agent = DeviceAgent(
        device_id="dev-1",
        link=client,
        store=store,
        policy=AlwaysEligible(),
        ledger=PrivacyLedger(tmp_path / "dev-1-privacy.sqlite", 10.0),
        outbox=Outbox(tmp_path / "dev-1-outbox.sqlite"),
        backoff=Backoff(rng=random.Random(0)),
        long_poll_s=long_poll_s,
    )
    return agent, client


def test_the_agent_asks_again_soon_after_a_held_wait_and_backs_off_otherwise(
    make_site: Callable[..., Site], tmp_path: Path
) -> None:
    site = make_site()
    polling, client = _agent(site, tmp_path / "a", long_poll_s=0.2)  # held 0.2 s, no round
    with client:
        delays = [polling.step() for _ in range(3)]
    assert all(d <= 1.0 for d in delays) and polling.backoff.attempt == 0
    assert site.service.long_poll.peak_held == 1
    old, client = _agent(site, tmp_path / "b", long_poll_s=0.0)  # does not offer to wait
    with client:
        delays = [old.step() for _ in range(3)]
    assert all(d >= 7.0 for d in delays) and old.backoff.attempt == 3  # the gateway's retry_after
