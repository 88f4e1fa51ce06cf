"""Helpers for the integration tests: a federation per module, log watching, the coordinator DB.

Every test here runs real processes (``fedge coordinator|gateway|device``) on loopback over mutual
TLS, started by :class:`~fedge.demo.federation.LocalFederation`. Tests look at three things: the
job as the admin API reports it, the coordinator's database (read-only, beside the live process),
and the processes' logs, which :class:`Logs` reads from a byte offset so that a test sees only
what happened after the moment it marked.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedge.coordinator.store import Store
from fedge.demo.federation import FederationPlan, LocalFederation
from fedge.transport.messages import JobSpec, JobView, TrainingPlan

CHECKED_IN = r'POST \S+/v1/checkin \\?"HTTP/1.1 200'  # a device's check-in was answered
TASK = "digits_mlp"  # 2,410 parameters: rounds take a second or two, most of it process overhead


def small_plan(devices_per_site: int = 3) -> FederationPlan:
    """Two sites of a few devices each; devices hold their data share within a second."""
    return FederationPlan(
        sites=("a", "b"),
        devices_per_site=devices_per_site,
        task=TASK,
        rows_per_tick=1000,
        tick_s=0.2,
    )


@contextmanager
def running_federation(workdir: Path, plan: FederationPlan) -> Iterator[LocalFederation]:
    """Start a whole federation and wait until every device has checked in at its gateway."""
    with LocalFederation(workdir, plan) as fed:
        fed.start()
        logs = Logs(fed)
        for site in plan.sites:
            for i in range(plan.devices_per_site):
                # (a JSON log line, with --log-format json, escapes the quote)
                logs.wait_for(f"dev-{site}-{i}", CHECKED_IN, timeout=120)
        yield fed


class Logs:
    """Read the processes' log files (``workdir/logs/<name>.log``) from remembered offsets."""

    def __init__(self, fed: LocalFederation) -> None:
        self.fed = fed
        self.dir = fed.workdir / "logs"

    def path(self, name: str) -> Path:
        """The log file of process ``name`` (kept across restarts: the supervisor appends)."""
        return self.dir / f"{name}.log"

    def mark(self, name: str) -> int:
        """The current end of ``name``'s log: pass it as ``since`` to see only later lines."""
        try:
            return self.path(name).stat().st_size
        except FileNotFoundError:
            return 0

    def marks(self) -> dict[str, int]:
        """A mark for every log file there is now."""
        return {p.stem: p.stat().st_size for p in self.dir.glob("*.log")}

    def text(self, name: str, since: int = 0) -> str:
        """Everything ``name`` logged after byte ``since``."""
        try:
            with self.path(name).open("rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def lines(self, name: str, pattern: str, since: int = 0) -> list[str]:
        """The lines of ``name``'s log after ``since`` that match ``pattern`` (a regex)."""
        regex = re.compile(pattern)
        return [line for line in self.text(name, since).splitlines() if regex.search(line)]

    def wait_for(
        self, name: str, pattern: str, *, since: int = 0, timeout: float = 60.0, count: int = 1
    ) -> list[str]:
        """Wait until ``name`` has logged ``count`` lines matching ``pattern`` after ``since``."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.lines(name, pattern, since)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                tail = "\n".join(self.text(name, since).splitlines()[-30:])
                raise AssertionError(
                    f"{name} did not log {pattern!r} ({len(found)}/{count}) in {timeout:.0f} s; "
                    f"its log since the mark ends with:\n{tail}"
                )
            time.sleep(0.05)


def job_spec(name: str, **overrides: Any) -> JobSpec:
    """A short job on the test task: one epoch, short deadlines; ``overrides`` as in JobSpec."""
    fields: dict[str, Any] = {
        "name": name,
        "task": TASK,
        "rounds": 1,
        "devices_per_round": 6,
        "over_selection": 1.0,
        "min_devices": 3,
        "training_deadline_s": 8.0,
        "report_deadline_s": 4.0,
        "plan": TrainingPlan(epochs=1, batch_size=20, lr=0.1),
        "seed": 0,
    }
    fields.update(overrides)
    return JobSpec(**fields)


def create_job(fed: LocalFederation, spec: JobSpec) -> JobView:
    """Create ``spec`` through the admin API."""
    with fed.admin_client() as admin:
        view: JobView = admin.create_job(spec)
    return view


def get_job(fed: LocalFederation, job_id: str) -> JobView:
    """The job as the admin API reports it now."""
    with fed.admin_client() as admin:
        view: JobView = admin.get_job(job_id)
    return view


def wait_for_job(fed: LocalFederation, job_id: str, timeout: float = 120.0) -> JobView:
    """Wait until the job is completed or failed; its final view."""
    view: JobView = fed.wait_for_job(job_id, timeout=timeout)
    return view


def wait_until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``check`` every 50 ms until true, else fail saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def round_state(fed: LocalFederation, job_id: str, number: int) -> str | None:
    """The state of round ``number`` of the job, or None before it exists."""
    for r in get_job(fed, job_id).rounds:
        if r.round == number:
            return r.state
    return None


@contextmanager
def coordinator_db(fed: LocalFederation) -> Iterator[Store]:
    """The live coordinator's database, opened beside it (SQLite in WAL mode; read only here)."""
    store = Store(f"sqlite:///{fed.workdir / 'coordinator' / 'coordinator.db'}")
    try:
        yield store
    finally:
        store.close()


def wait_gateways_counted(fed: LocalFederation, eligible: dict[str, int], timeout: float) -> None:
    """Wait until the coordinator has heard each gateway count ``eligible[gw]`` devices (it plans
    a round's quotas from those counts, which reach it with the gateways' next check-ins)."""

    def counted() -> bool:
        with coordinator_db(fed) as db:
            seen = {g.id: g.eligible_devices for g in db.list_gateways()}
        return all(seen.get(gw, 0) >= n for gw, n in eligible.items())

    wait_until(counted, timeout=timeout, what=f"the coordinator to count devices {eligible}")
