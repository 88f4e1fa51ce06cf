"""Decisions no admin made, in the audit log: a canary stage's start, widening and halt (actor
"canary"), and revocations made with ``fedge pki revoke`` (actor "pki", seen in the CRL the
coordinator reloads), each recorded once and the chain still intact."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.coordinator import ArtifactStore, CoordinatorService, CoordinatorSettings, Store
from fedge.coordinator.secure_setup import SecAggAuthority
from fedge.identity import PkiPaths, RevocationChecker, init_pki, issue, load_certificate, revoke
from fedge.identity.certificates import identity_from_certificate
from fedge.telemetry.audit import AuditEntry

from .helpers import ADMIN, Clock
from .test_releases import commit_one_round
from .test_rollouts import report, second_version, service, split


def _only(entries: list[AuditEntry], kind: str, actor: str) -> list[AuditEntry]:
    return [e for e in entries if e.kind == kind and e.actor == actor]


def test_a_canary_that_widens_is_recorded_from_start_to_widening(tmp_path: Path) -> None:
    svc = service(tmp_path)
    _, v1 = commit_one_round(svc)
    v2 = second_version(svc, v1)
    canary, _ = split(svc, v2)
    svc.report_health(canary, "digits", report(v2, 2))  # healthy: widened
    audit = svc.driver.audit
    assert audit.verify().intact
    started, widened = _only(audit.entries(kinds=["rollout"]), "rollout", "canary")
    assert started.subject == widened.subject == v2
    assert started.details["stage"] == "canary" and started.details["previous_sha256"] == v1
    assert started.details["canary_gateways"] == [canary.name]
    assert started.details["manifest"] == 2 and started.details["version"] == "digits/r2"
    assert widened.details["stage"] == "widened" and widened.details["manifest"] == 3
    assert widened.details["healthy"] == 1 and "healthy canary report" in widened.details["reason"]


def test_a_canary_halt_is_a_rollback_by_the_canary(tmp_path: Path) -> None:
    svc = service(tmp_path)
    _, v1 = commit_one_round(svc)
    v2 = second_version(svc, v1)
    canary, _ = split(svc, v2)
    svc.report_health(canary, "digits", report(v2, 2, "accuracy", "d2"))  # failed: halted
    assert svc.admin.get_model(ADMIN, v2).status == "rolled_back"
    audit = svc.driver.audit
    (halt,) = _only(audit.entries(kinds=["rollback"]), "rollback", "canary")
    assert halt.subject == "digits"
    assert (halt.details["rolled_back"], halt.details["restored"]) == (v2, v1)
    assert halt.details["stage"] == "halted" and halt.details["failed"] == 1
    assert "failed the health check" in halt.details["reason"]
    assert audit.verify().intact


def test_a_canary_halted_by_its_hold_time_is_recorded_once(tmp_path: Path) -> None:
    svc = service(tmp_path)
    _, v1 = commit_one_round(svc)
    v2 = second_version(svc, v1)
    split(svc, v2)
    assert isinstance(svc.clock, Clock)
    svc.clock.now += 101
    for _ in range(3):
        svc.tick()  # only the first tick finds the stage still running
    (halt,) = _only(svc.driver.audit.entries(kinds=["rollback"]), "rollback", "canary")
    assert "within the hold time" in halt.details["reason"]


@pytest.fixture
def pki(tmp_path: Path) -> PkiPaths:
    paths = init_pki(tmp_path / "pki", "acme", validity_days=30)
    issue(paths.directory, "coordinator", "coord")
    for name in ("d1", "d2"):
        issue(paths.directory, "device", name, site="s1")
    return paths


def _coordinator(tmp: Path, pki: PkiPaths, clock: Clock) -> CoordinatorService:
    """A coordinator with its PKI files, as ``build_coordinator`` makes one (same database)."""
    checker = RevocationChecker(pki.crl, load_certificate(pki.ca_cert))
    authority = SecAggAuthority.from_files(
        pki.ca_cert, pki.cert_for("coord"), pki.key_for("coord"), checker
    )
    store = Store(f"sqlite:///{tmp / 'coord.db'}")
    return CoordinatorService(
        store, ArtifactStore(tmp / "artifacts"), CoordinatorSettings(), clock, secagg=authority
    )


def test_revocations_with_fedge_pki_are_recorded_once_per_serial(
    tmp_path: Path, pki: PkiPaths
) -> None:
    clock = Clock()
    svc = _coordinator(tmp_path, pki, clock)
    d1 = identity_from_certificate(pki.cert_for("d1").read_bytes())
    svc.driver.audit.record_contact(d1)  # d1 checked in once: the log knows its serial
    svc.tick()
    assert svc.driver.audit.entries(kinds=["revocation"]) == []  # nothing revoked yet

    revoke(pki.directory, "d1", "key_compromise")  # what `fedge pki revoke d1` does
    svc.tick()  # the CRL changed: reloaded, and its new serial recorded
    svc.tick()
    (entry,) = svc.driver.audit.entries(kinds=["revocation"])
    assert (entry.actor, entry.subject) == ("pki", "d1")
    assert entry.details["serial"] == format(d1.serial, "x") and entry.details["source"] == "crl"
    assert (entry.details["role"], entry.details["site"]) == ("device", "s1")
    assert entry.details["reason"] == "key_compromise" and entry.details["crl_number"] >= 1

    (d2,) = revoke(pki.directory, "d2")  # never seen by the coordinator: named by its serial
    svc.store.close()
    restarted = _coordinator(tmp_path, pki, clock)  # both revocations are on the CRL now
    restarted.tick()
    entries = restarted.driver.audit.entries(kinds=["revocation"])
    assert [(e.subject, e.details["serial"]) for e in entries] == [
        ("d1", format(d1.serial, "x")),
        (f"serial:{d2.serial:x}", format(d2.serial, "x")),
    ]  # d1 not again after the restart
    assert restarted.driver.audit.verify().intact
