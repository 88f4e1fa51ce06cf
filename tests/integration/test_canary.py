"""A staged rollout with real processes: canary first, health reports, widening, then a rollback.

Coordinator, two gateways and four serving devices run as processes over mutual TLS. The job's
second version goes to one gateway's devices first (``[canary] fraction = 0.5``); they load it,
health-check it and report through their gateway; one passed report widens it to everyone. The
devices' logs show which signed manifests each accepted: the other site's devices never saw the
canary manifest. An admin rollback then reaches every device as a newer manifest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from fedge.cli import cli
from fedge.coordinator.audit import AuditLog
from fedge.demo.federation import FederationPlan, LocalFederation, device_name, gateway_name

from .harness import Logs, coordinator_db, create_job, job_spec, wait_for_job, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

JOB = "canary"
SITES = ("a", "b")
PER_SITE = 2
_ACCEPTED = re.compile(r"accepted release manifest (\d+) for canary: canary/r(\d+) \((\w+)\)")


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    plan = FederationPlan(
        sites=SITES,
        devices_per_site=PER_SITE,
        task="digits_mlp",
        rows_per_tick=1000,
        tick_s=0.2,
        coordinator_extra={
            "release_margin": 1.0,  # the gate promotes every committed round
            "canary": {"fraction": 0.5, "min_healthy": 1, "max_failures": 0, "hold_s": 240.0},
        },
    )
    workdir: Path = tmp_path_factory.mktemp("canary")
    with LocalFederation(workdir, plan) as federation:
        federation.create_pki()
        federation.start_coordinator()
        for site in SITES:
            federation.start_gateway(site)
        logs = Logs(federation)
        for site in SITES:
            for i in range(PER_SITE):
                federation.start_device(site, i, serve_job=JOB)
                logs.wait_for(
                    device_name(site, i), r"POST \S+/v1/checkin \"HTTP/1.1 200", timeout=120
                )
        yield federation


def _cli(fed: LocalFederation, *args: str) -> str:
    """Run a ``fedge`` admin command against the federation; its output."""
    assert fed.coordinator_url is not None
    argv = [*args, "--url", fed.coordinator_url, "--pki", str(fed.pki)]
    result = CliRunner().invoke(cli, argv, catch_exceptions=False, terminal_width=250)
    assert result.exit_code == 0, result.output
    return result.output


def served(fed: LocalFederation, site: str, i: int) -> str | None:
    try:
        answer = httpx.get(f"{fed.prediction_endpoint(site, i)}/model", timeout=5)
    except httpx.HTTPError:
        return None
    return str(answer.json().get("version")) if answer.status_code == 200 else None


def accepted(logs: Logs, site: str, i: int) -> list[tuple[int, int, str]]:
    """(manifest sequence, round, status) of every manifest the device accepted, in order."""
    found = _ACCEPTED.findall(logs.text(device_name(site, i)))
    return [(int(seq), int(rnd), status) for seq, rnd, status in found]


def test_canary_then_widened_then_rolled_back_on_every_device(fed: LocalFederation) -> None:
    logs = Logs(fed)
    spec = job_spec(JOB, rounds=2, devices_per_round=4, min_devices=2)
    create_job(fed, spec)
    assert wait_for_job(fed, JOB, timeout=180).state == "completed"

    with fed.admin_client() as admin:  # round numbers count attempts: take the committed ones
        first, r2 = [v for v in admin.list_models(JOB) if v.round][-2:]
    v1, v2 = first.version, r2.version

    def rollout_stage() -> str | None:
        with fed.admin_client() as admin:
            view = admin.get_model(r2.sha256).rollout
        return view.stage if view is not None else None

    wait_until(lambda: rollout_stage() == "widened", timeout=120, what="the canary to widen")
    with fed.admin_client() as admin:
        view = admin.get_model(r2.sha256)
    assert view.status == "production" and view.rollout is not None
    assert view.rollout.healthy >= 1 and view.rollout.failed == 0
    (canary_gw,) = view.rollout.canary_gateways
    shown = json.loads(_cli(fed, "models", "show", r2.sha256))  # `fedge models show`
    assert shown["rollout"]["stage"] == "widened" and shown["rollout"]["healthy"] >= 1
    assert "widened" in _cli(fed, "models", "list", JOB)
    canary_site = next(s for s in SITES if gateway_name(s) == canary_gw)

    every = [(s, i) for s in SITES for i in range(PER_SITE)]
    wait_until(
        lambda: all(served(fed, s, i) == v2 for s, i in every),
        timeout=120,
        what="every device to serve r2",
    )
    histories = {(site, i): accepted(logs, site, i) for site, i in every}
    # r2 reached the canary site as the canary manifest (sequence 2): the device that reported
    # first widened it at once, so a device of that site that asked later may see only 3
    assert any((2, r2.round, "canary") in histories[canary_site, i] for i in range(PER_SITE))
    for (site, _), history in histories.items():
        statuses = {status for _, _, status in history}
        if site != canary_site:  # never saw the canary manifest: r1, then r2 once widened
            assert "canary" not in statuses and history[-1][1:] == (r2.round, "production"), history
    health = logs.lines(gateway_name(canary_site), r"POST \S+/v1/jobs/canary/health \"HTTP/1.1 200")
    assert health, "the canary gateway forwarded no health report"

    with fed.admin_client() as admin:
        admin.rollback_model(JOB)  # a newer manifest naming r1
    wait_until(
        lambda: all(served(fed, s, i) == v1 for s, i in every),
        timeout=120,
        what="the rollback to reach every device",
    )
    for site, i in every:
        last = accepted(logs, site, i)[-1]
        assert last[1:] == (first.round, "production") and last[0] > 3, last


def test_a_canary_whose_devices_fail_the_health_check_is_halted(fed: LocalFederation) -> None:
    """Devices restarted with a holdout floor no model reaches (100 %): the canary fails."""
    job = "canary-bad"
    logs = Logs(fed)
    for site in SITES:
        for i in range(PER_SITE):
            fed.supervisor.stop(device_name(site, i))
            fed.start_device(site, i, serve_job=job, serving={"min_accuracy": 1.0})
    create_job(fed, job_spec(job, rounds=2, devices_per_round=4, min_devices=2))
    assert wait_for_job(fed, job, timeout=240).state == "completed"
    with fed.admin_client() as admin:
        first, second = [v for v in admin.list_models(job) if v.round][-2:]

    def halted() -> bool:
        with fed.admin_client() as admin:
            view = admin.get_model(second.sha256).rollout
        return view is not None and view.stage == "halted"

    wait_until(halted, timeout=120, what="the canary to halt")
    with fed.admin_client() as admin:
        bad, restored = admin.get_model(second.sha256), admin.get_model(first.sha256)
    assert bad.status == "rolled_back" and "canary rollout halted" in bad.status_reason
    assert bad.rollout is not None and bad.rollout.failed >= 1
    assert "failed the health check" in bad.rollout.reason
    assert restored.status == "production"
    with coordinator_db(fed) as db:  # the halt is in the audit log, as the canary's rollback
        halts = AuditLog(db.engine).entries(kinds=["rollback"])
    assert any(
        (e.actor, e.subject, e.details.get("rolled_back")) == ("canary", job, second.sha256)
        for e in halts
    ), halts
    (canary_gw,) = bad.rollout.canary_gateways
    forwarded = logs.lines(canary_gw, r"POST \S+/v1/jobs/canary-bad/health \"HTTP/1.1 200")
    assert forwarded, "the canary gateway forwarded no health report"
    refused = [
        line
        for site in SITES
        for i in range(PER_SITE)
        for line in logs.lines(device_name(site, i), r"refused production model canary-bad/r")
    ]
    assert any("below the floor" in line for line in refused), refused
