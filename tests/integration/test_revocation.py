"""`fedge devices revoke` reaches the gateway, with real processes over mutual TLS.

A coordinator, a gateway and three devices run as processes. The admin revokes one device
through the admin API (the CLI). The gateway hears it in its next check-in answer and refuses the
device at once: 403 with a message saying it is revoked, logged, and counted in
``fedge_requests_refused_total{reason="revoked"}``; it stops counting it eligible, so the
coordinator plans the round for the two others, and the round commits with them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedge.cli import cli
from fedge.demo.federation import FederationPlan, LocalFederation, device_name, gateway_name

from .harness import (
    TASK,
    Logs,
    coordinator_db,
    create_job,
    job_spec,
    running_federation,
    wait_for_job,
    wait_gateways_counted,
    wait_until,
)
from .test_metrics import scrape, value

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

SITE = "a"
GATEWAY = gateway_name(SITE)
REVOKED = device_name(SITE, 2)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    plan = FederationPlan(
        sites=(SITE,), devices_per_site=3, task=TASK, rows_per_tick=1000, tick_s=0.2
    )
    workdir: Path = tmp_path_factory.mktemp("revocation")
    with running_federation(workdir, plan) as federation:
        yield federation


def test_a_revoked_device_is_refused_by_its_gateway_and_the_round_commits_without_it(
    fed: LocalFederation,
) -> None:
    wait_gateways_counted(fed, {GATEWAY: 3}, timeout=60)
    logs = Logs(fed)
    marks = logs.marks()
    assert fed.coordinator_url is not None
    revoke = CliRunner().invoke(
        cli, ["devices", "revoke", REVOKED, "--url", fed.coordinator_url, "--pki", str(fed.pki)]
    )
    assert revoke.exit_code == 0 and "revoked=True" in revoke.output, revoke.output
    since = marks[GATEWAY]
    logs.wait_for(GATEWAY, rf"device {REVOKED} was revoked through the coordinator's admin API",
                  since=since, timeout=30)  # fmt: skip
    logs.wait_for(GATEWAY, rf"refused device {REVOKED}: revoked", since=since, timeout=60)
    # the device is told why, with a 403
    logs.wait_for(REVOKED, r"POST \S+/v1/checkin \"HTTP/1.1 403", since=marks[REVOKED], timeout=60)
    logs.wait_for(REVOKED, rf"device '{REVOKED}' is revoked", since=marks[REVOKED], timeout=30)

    def counted_two() -> bool:
        with coordinator_db(fed) as db:
            return {g.id: g.eligible_devices for g in db.list_gateways()}.get(GATEWAY) == 2

    wait_until(counted_two, timeout=30, what=f"{GATEWAY} to count 2 devices eligible")
    create_job(fed, job_spec("after-revoke", devices_per_round=3, min_devices=2))
    view = wait_for_job(fed, "after-revoke", timeout=180)
    assert view.state == "completed", view
    (first,) = view.rounds
    assert first.state == "committed" and first.participants == 2, first
    with coordinator_db(fed) as db:
        took_part = {p.device_id for p in db.participants("after-revoke", 1)}
    assert took_part == {device_name(SITE, 0), device_name(SITE, 1)}
    assert fed.gateway_ops_urls.get(SITE) is not None
    refused = value(
        scrape(fed, fed.gateway_ops_urls[SITE]), "fedge_requests_refused_total", reason="revoked"
    )
    assert refused >= 1
