"""The audit log and ``fedge report`` after a real networked job (issue 7, items 4 and 6).

One federation (two sites of three devices, real processes over mutual TLS) commits one round; the
admin then pauses and resumes a second job and revokes a device. The coordinator's own database
must then hold a verifiable chain: the gateways' and devices' enrolments with their certificates'
serials, the round with exactly the devices the round counted, the releases, and every admin
action under the admin certificate's name. ``fedge audit verify`` and ``fedge report`` run as an
operator would, against the coordinator's config file.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fedge.cli.main import cli
from fedge.coordinator.audit import AuditLog
from fedge.identity import load_certificate

from .harness import coordinator_db, create_job, job_spec, running_federation, small_plan

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]


def rounds_table(page: str) -> str:
    """The report's table of round attempts (what follows it says when it was made)."""
    return page.split("<h2>Rounds</h2>")[1].split("<p>Made ", maxsplit=1)[0]


def test_a_networked_round_and_admin_actions_are_in_a_verifiable_log(tmp_path: Path) -> None:
    with running_federation(tmp_path / "fed", small_plan()) as fed:
        create_job(fed, job_spec("audited"))
        view = fed.wait_for_job("audited", timeout=180)
        assert view.state == "completed"
        create_job(fed, job_spec("second", rounds=50, min_devices=6))
        with fed.admin_client() as admin:
            admin.pause_job("second")
            admin.resume_job("second")
            admin.revoke_device("dev-b-2")
        config = fed.workdir / "coordinator" / "coordinator.toml"
        pki = fed.pki
        assert fed.coordinator_ops_url is not None
        over_ops = [  # the same report fetched from the ops listener: with the token, as admin
            ["--token-file", str(fed.ops_token_file)],
            [],
        ]
        for i, how in enumerate(over_ops):
            args = ["report", "audited", "--ops-url", fed.coordinator_ops_url, "--pki", str(pki)]
            result = CliRunner().invoke(cli, [*args, *how, "--out", str(tmp_path / f"ops{i}")])
            assert result.exit_code == 0, result.output + repr(result.exception)
    with coordinator_db(fed) as db:  # the federation has stopped: the log is complete
        audit = AuditLog(db.engine)
        report = audit.verify()
        entries = audit.entries()
        attempts = {r.number: r.state for r in db.list_rounds("audited")}
        (done,) = [r for r in db.list_rounds("audited") if r.state == "committed"]
        counted = {p.device_id for p in db.participants("audited", done.number)}
        round_model = done.model_sha256

    assert report.intact, report.broken
    enrolled = {(e.subject, e.details["role"]): e for e in entries if e.kind == "enrolment"}
    gw_cert = load_certificate(pki / "issued" / "gw-a.crt")
    gateway = enrolled[("gw-a", "gateway")]
    assert gateway.details["serial"] == format(gw_cert.serial_number, "x")
    assert gateway.details["site"] == "a" and gateway.actor == "gw-a"
    device = enrolled[("dev-a-0", "device")]  # registered by its gateway, with its certificate
    assert device.actor == "gw-a" and device.details["via"] == "gw-a"
    dev_cert = load_certificate(pki / "issued" / "dev-a-0.crt")
    assert device.details["serial"] == format(dev_cert.serial_number, "x")
    assert ("admin", "admin") in enrolled

    ours = [e for e in entries if e.kind == "round" and e.details["job"] == "audited"]
    rounds = {e.details["round"]: e for e in ours}
    assert {n: e.details["outcome"] for n, e in rounds.items()} == attempts  # abandoned ones too
    rnd = rounds[done.number]
    assert set(rnd.details["devices"]) == counted and len(counted) >= 3
    assert set(rnd.details["gateways"]) <= {"gw-a", "gw-b"} and rnd.details["gateways"]
    assert rnd.details["model_sha256"] == round_model
    released = {e.subject for e in entries if e.kind == "release"}
    assert round_model in released

    admin_acts = [
        (e.kind, e.subject) for e in entries if e.actor == "admin" and e.kind != "enrolment"
    ]
    assert admin_acts == [
        ("job.create", "audited"),
        ("job.create", "second"),
        ("job.pause", "second"),
        ("job.resume", "second"),
        ("revocation", "dev-b-2"),
    ]
    acts = [e for e in entries if e.actor == "admin" and e.kind != "enrolment"]
    assert all(e.details["admin"]["role"] == "admin" for e in acts)  # the certificate's role
    assert all(e.details["role"] == "admin" for e in entries if e.subject == "admin")
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))

    result = CliRunner().invoke(cli, ["audit", "verify", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert f"intact: {len(entries)} entries" in result.stdout

    out = tmp_path / "report"
    result = CliRunner().invoke(
        cli, ["report", "audited", "--config", str(config), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    page = (out / "audited-report.html").read_text()
    (final,) = [r for r in view.rounds if r.state == "committed"]
    assert final.accuracy is not None
    assert f"<th>final accuracy</th><td>{final.accuracy:.4f}</td>" in page
    assert f"<td>{final.participants}</td>" in page
    assert (out / "audited-report.png").read_bytes().startswith(b"\x89PNG")
    for i in range(2):  # the ops listener serves the same numbers as the database
        fetched = (tmp_path / f"ops{i}" / "audited-report.html").read_text()
        assert f"<th>final accuracy</th><td>{final.accuracy:.4f}</td>" in fetched
        assert rounds_table(fetched) == rounds_table(page)
