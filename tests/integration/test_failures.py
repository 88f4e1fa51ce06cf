"""Failure handling with real processes (issue 5): devices, gateways, an uplink and the coordinator
fail mid-round; rounds commit or are abandoned as the job says, and jobs complete.

One federation serves the whole module: coordinator, gateway ``gw-a`` (direct uplink), gateway
``gw-b`` (uplink through a :class:`~fedge.demo.proxy.TcpProxy` that a test can cut) and three
devices per site. Each test runs its own job and leaves every process running again, so the
tests stay independent; a job's deadlines are short so a round that waits for a dead peer ends
within seconds.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedge.demo.federation import LocalFederation, device_name
from fedge.demo.proxy import TcpProxy
from fedge.transport.messages import TrainingPlan

from .harness import (
    Logs,
    coordinator_db,
    create_job,
    job_spec,
    round_state,
    small_plan,
    wait_for_job,
    wait_gateways_counted,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SITES = ("a", "b")
DEVICES = 3  # per site
CHECKIN_OK = r"POST \S+/v1/checkin \"HTTP/1.1 200"


class Fleet:
    """The module's federation, its logs and the proxy on gw-b's uplink."""

    def __init__(self, fed: LocalFederation, proxy: TcpProxy) -> None:
        self.fed = fed
        self.proxy = proxy
        self.logs = Logs(fed)

    def restart_device(self, site: str, index: int) -> None:
        """Start a killed device again and wait until it checks in at its gateway."""
        name = device_name(site, index)
        since = self.logs.mark(name)
        self.fed.start_device(site, index)
        self.logs.wait_for(name, CHECKIN_OK, since=since, timeout=120)

    def restart_gateway(self, site: str) -> None:
        """Start a killed gateway again (same port, uplink, state dir); wait for its devices."""
        since = {d: self.logs.mark(d) for d in self.devices(site)}
        self.fed.start_gateway(site)
        for d in self.devices(site):
            self.logs.wait_for(d, CHECKIN_OK, since=since[d], timeout=60)

    @staticmethod
    def devices(site: str) -> list[str]:
        return [device_name(site, i) for i in range(DEVICES)]

    def heal(self) -> None:
        """After a test (passed or not): no job left running, every process up and thawed."""
        with self.fed.admin_client() as admin:
            for job in admin.list_jobs():
                if job.state == "running":
                    admin.pause_job(job.id)
        self.proxy.restore()
        procs = self.fed.supervisor.processes
        for proc in procs.values():
            proc.signal_group(signal.SIGCONT)
        dead = {name for name, proc in procs.items() if not proc.alive}
        for name in dead:  # forgotten first: the supervisor refuses to wait while any lies dead
            del procs[name]
        if "coordinator" in dead:
            self.fed.start_coordinator()
        for site in SITES:
            if f"gw-{site}" in dead:
                self.fed.start_gateway(site)
        for site in SITES:
            for i, name in enumerate(self.devices(site)):
                if name in dead:
                    self.restart_device(site, i)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir: Path = tmp_path_factory.mktemp("failures")
    with LocalFederation(workdir, small_plan(DEVICES)) as fed:
        fed.create_pki()
        coordinator = fed.start_coordinator()
        proxy = TcpProxy("127.0.0.1", int(coordinator.rsplit(":", 1)[1]))
        try:
            fed.start_gateway("a")
            fed.start_gateway("b", coordinator_url=f"https://127.0.0.1:{proxy.port}")
            for site in SITES:
                for i in range(DEVICES):
                    fed.start_device(site, i)
            fleet = Fleet(fed, proxy)
            for site in SITES:
                for d in fleet.devices(site):
                    fleet.logs.wait_for(d, CHECKIN_OK, timeout=180)
            yield fleet
        finally:
            proxy.close()


@pytest.fixture(autouse=True)
def _isolated(fleet: Fleet) -> Iterator[None]:
    """Each test starts from a whole, idle federation, even if the one before it failed."""
    wait_gateways_counted(fleet.fed, {f"gw-{site}": DEVICES for site in SITES}, timeout=60)
    yield
    fleet.heal()


def test_device_vanishes_mid_round_over_selection_covers_it(fleet: Fleet) -> None:
    """A device killed after it was handed a task: the round commits with the others."""
    fed, logs = fleet.fed, fleet.logs
    since = logs.mark("gw-a")
    # 4 devices wanted, 1.5x over-selected: every one of the 6 is asked; 4 must report.
    # 8 epochs keep each device training for a while, so the victim dies before it reports.
    spec = job_spec(
        "vanish",
        devices_per_round=4,
        over_selection=1.5,
        min_devices=4,
        training_deadline_s=15.0,
        plan=TrainingPlan(epochs=8, batch_size=10, lr=0.05),
    )
    job = create_job(fed, spec).id
    handed = logs.wait_for("gw-a", rf"handed {job} round 1 to dev-a-\d", since=since, timeout=60)
    victim = re.search(r"to (dev-a-\d+)", handed[0])[1]
    fed.supervisor.kill(victim)

    view = wait_for_job(fed, job, timeout=120)
    assert view.state == "completed"
    (rnd,) = view.rounds
    assert rnd.state == "committed" and rnd.model_sha256 is not None
    with coordinator_db(fed) as db:
        counted = {p.device_id for p in db.participants(job, 1)}
        row = db.get_round(job, 1)
    assert row is not None
    asked = sum(row.quotas.values())  # 6, or 5 if a gateway had not yet counted every device
    assert rnd.participants == asked - 1 >= spec.min_devices and rnd.gateways_reported == 2
    assert victim not in counted and len(counted) == asked - 1
    gateway_close = logs.lines("gw-a", rf"round {job}/1 closed: 2 accepted", since=since)
    assert gateway_close, "gw-a should have reported the two devices that survived"
    fleet.restart_device("a", int(victim.rsplit("-", 1)[1]))


def test_too_few_devices_report_round_abandoned_no_model_published(fleet: Fleet) -> None:
    """Two devices freeze before the round: 4 of 6 report, min_devices is 5 -> abandoned."""
    fed, logs = fleet.fed, fleet.logs
    frozen = [device_name("a", 2), device_name("b", 2)]
    marks = logs.marks()
    for name in frozen:  # still counted eligible by their gateways (seen moments ago)
        fed.supervisor.processes[name].signal_group(signal.SIGSTOP)
    try:
        spec = job_spec("toofew", min_devices=5, training_deadline_s=6.0, report_deadline_s=3.0)
        job = create_job(fed, spec).id
        wait_until(lambda: round_state(fed, job, 1) == "abandoned", timeout=60, what="abandon")
    finally:
        for name in frozen:
            fed.supervisor.processes[name].signal_group(signal.SIGCONT)

    view = wait_for_job(fed, job, timeout=120)
    assert view.state == "completed"
    first, second = view.rounds
    assert first.state == "abandoned" and first.model_sha256 is None
    assert 0 < first.participants <= 4  # the frozen two never reported (a slow one may miss too)
    n = first.participants
    assert f"only {n} device(s) reported" in first.reason and "min_devices = 5" in first.reason
    assert second.state == "committed" and second.model_sha256 is not None
    with coordinator_db(fed) as db:
        versions = db.list_model_versions(job)
        rounds = {r.number: r for r in db.list_rounds(job)}
    initial = [v.sha256 for v in versions if v.round is None]
    assert [v.round for v in versions if v.round is not None] == [2]  # nothing from round 1
    assert rounds[2].base_sha256 == initial[0]  # the retry trains from the unchanged model
    assert logs.lines(
        "coordinator", rf"job {job} round 1 abandoned: only {n}", marks["coordinator"]
    )
    for gw in ("gw-a", "gw-b"):  # each gateway reported what it had: the frozen device missing
        assert logs.lines(gw, rf"round {job}/1 closed: [012] accepted", marks[gw])


@pytest.mark.parametrize(
    ("victim_site", "min_devices"), [("a", 3), ("b", 4)], ids=["commits", "abandons"]
)
def test_gateway_killed_mid_round(fleet: Fleet, victim_site: str, min_devices: int) -> None:
    """A gateway dies after handing out work: its site's updates are lost for that round only.

    With min_devices = 3 the other site's three devices commit the round; with 4 it is
    abandoned cleanly. Either way the gateway comes back and the next round uses both sites (the
    job is paused meanwhile, so that round 2 does not open before the gateway has restarted).
    """
    fed, logs = fleet.fed, fleet.logs
    gateway = f"gw-{victim_site}"
    other = "b" if victim_site == "a" else "a"
    marks = logs.marks()
    commits = min_devices <= DEVICES
    rounds = 2 if commits else 1  # either way: round 1 without the gateway, round 2 with it
    # 8 epochs keep the devices training for a while, so the gateway dies before its partial goes
    spec = job_spec(
        f"gwkill-{victim_site}",
        rounds=rounds,
        min_devices=min_devices,
        training_deadline_s=15.0,
        plan=TrainingPlan(epochs=8, batch_size=10, lr=0.05),
    )
    job = create_job(fed, spec).id
    # both sites have their work (the pause below stops hand-outs to a gateway that has none);
    # the victim is frozen the moment it has handed work out, so its partial cannot leave before
    # it dies, however fast its devices train on a loaded machine
    logs.wait_for(gateway, rf"handed {job} round 1 to", since=marks[gateway], timeout=60)
    fed.supervisor.processes[gateway].signal_group(signal.SIGSTOP)
    logs.wait_for(
        f"gw-{other}", rf"handed {job} round 1 to", since=marks[f"gw-{other}"], timeout=60
    )
    fed.supervisor.kill(gateway)
    with fed.admin_client() as admin:  # hold round 2 until the gateway is back (takes seconds)
        admin.pause_job(job)
    wait_until(
        lambda: round_state(fed, job, 1) in ("committed", "abandoned"), timeout=60, what="round 1"
    )
    fleet.restart_gateway(victim_site)  # returns once its devices have checked in again
    logs.wait_for(gateway, r"gateway/checkin \"HTTP/1.1 200", since=logs.mark(gateway), count=2)
    with fed.admin_client() as admin:
        admin.resume_job(job)

    view = wait_for_job(fed, job, timeout=120)
    assert view.state == "completed"
    first = view.rounds[0]
    assert first.gateways_reported == 1 and first.participants == DEVICES
    with coordinator_db(fed) as db:
        receipts = db.receipts(job, 1)
        counted = {p.device_id for p in db.participants(job, 1)}
    assert [r.gateway_id for r in receipts] == [f"gw-{other}"]
    assert counted == set(fleet.devices(other))
    if commits:
        assert first.state == "committed" and first.model_sha256 is not None
    else:
        assert first.state == "abandoned" and first.model_sha256 is None
        assert f"only {DEVICES} device(s) reported" in first.reason
    assert len(view.rounds) == 2
    last = view.rounds[-1]
    assert last.state == "committed" and last.gateways_reported == 2  # the gateway is back
    assert last.participants == 2 * DEVICES  # ... and so is the work of its devices


def test_uplink_cut_then_restored_partial_arrives_exactly_once(fleet: Fleet) -> None:
    """gw-b's uplink is cut while its partial is due; after the link returns it is counted once."""
    fed, logs, proxy = fleet.fed, fleet.logs, fleet.proxy
    marks = logs.marks()
    spec = job_spec(
        "uplink",
        min_devices=6,
        training_deadline_s=10.0,
        report_deadline_s=30.0,
        plan=TrainingPlan(epochs=5, batch_size=10, lr=0.1),
    )
    job = create_job(fed, spec).id
    # Cut once the site has the round's model (a device got it from gw-b's cache): from then on
    # the site trains without the uplink, and its partial falls due while the link is down.
    got_model = r"GET \S+/v1/models/\w+ \"HTTP/1.1 200"
    wait_until(
        lambda: any(logs.lines(d, got_model, marks[d]) for d in fleet.devices("b")),
        timeout=60,
        what="a device of site b to download the round's model",
    )
    proxy.cut()
    try:
        logs.wait_for("gw-b", rf"round {job}/1 closed: 3 accepted", since=marks["gw-b"], timeout=30)
        logs.wait_for(
            "gw-b",
            rf"coordinator unavailable, partial partial/{job}/1 kept for retry",
            since=marks["gw-b"],
            timeout=30,
            count=2,
        )
        assert round_state(fed, job, 1) == "training"  # the coordinator still waits for gw-b
    finally:
        proxy.restore()

    view = wait_for_job(fed, job, timeout=120)
    assert view.state == "completed"
    (rnd,) = view.rounds
    assert rnd.state == "committed" and rnd.participants == 6 and rnd.gateways_reported == 2
    with coordinator_db(fed) as db:
        receipts = db.receipts(job, 1)
        counted = sorted(p.device_id for p in db.participants(job, 1))
    assert sorted((r.gateway_id, r.num_accepted) for r in receipts) == [("gw-a", 3), ("gw-b", 3)]
    assert counted == sorted(fleet.devices("a") + fleet.devices("b"))
    delivered = logs.lines("gw-b", rf"partial partial/{job}/1 delivered", marks["gw-b"])
    assert len(delivered) == 1 and "duplicate" not in delivered[0]
    posts = logs.lines(
        "coordinator",
        rf"POST /v1/jobs/{job}/rounds/1/partials HTTP/1.1\" 200",
        marks["coordinator"],
    )
    assert len(posts) == 2  # one per gateway: the retried partial was sent whole, once


def test_coordinator_killed_mid_round_resumes_from_checkpoint(fleet: Fleet) -> None:
    """SIGKILL the coordinator during round 2, restart it on the same port and database."""
    fed, logs = fleet.fed, fleet.logs
    marks = logs.marks()
    job = create_job(fed, job_spec("restart", rounds=3)).id
    logs.wait_for("coordinator", rf"job {job} round 1 committed", since=marks["coordinator"])
    logs.wait_for("gw-a", rf"handed {job} round 2 to", since=marks["gw-a"], timeout=60)
    fed.supervisor.kill("coordinator")
    fed.start_coordinator()  # same port, same SQLite file, same artifacts

    view = wait_for_job(fed, job, timeout=180)
    assert view.state == "completed"
    committed = [r for r in view.rounds if r.state == "committed"]
    numbers = [r.round for r in committed]
    assert len(committed) == 3 and numbers == sorted(set(numbers))  # none lost, none repeated
    interrupted = next(r for r in view.rounds if r.round == 2)
    assert interrupted.state == "abandoned" and interrupted.model_sha256 is None
    assert "coordinator restarted" in interrupted.reason
    with coordinator_db(fed) as db:
        versions = {v.round: v for v in db.list_model_versions(job)}
        rounds = {r.number: r for r in db.list_rounds(job)}
        checkpoint = db.latest_checkpoint(job)
    parent = versions[None].sha256
    for number in numbers:  # lineage: each published model descends from the previous one
        assert rounds[number].base_sha256 == parent
        assert versions[number].parent_sha256 == parent
        parent = versions[number].sha256
    assert checkpoint is not None and checkpoint.step == 3 and checkpoint.params_sha256 == parent
    assert logs.lines("coordinator", r"coordinator restarted while round 2", marks["coordinator"])
