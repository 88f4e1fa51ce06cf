"""Registry moves made over the admin API with an admin certificate are audited under its name.

A real coordinator service (SQLite, two committed rounds fed with gateway partials) behind the real
API app on 127.0.0.1, over mutual TLS: the admin ``alice`` (a certificate issued by the fleet CA)
promotes a version and rolls the job back with :class:`~fedge.transport.client.FedgeClient`, as
``fedge models promote`` / ``rollback`` do. The audit log must name ``alice`` (the certificate's
subject, never a name the request could choose) as the actor of both, with the certificate's role
and serial, and the chain must still verify.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.coordinator.helpers import ADMIN, Clock, make_service, run_plain_round, spec

from fedge.coordinator import CoordinatorService
from fedge.identity import PeerVerifier, init_pki, issue
from fedge.transport.api import build_app
from fedge.transport.client import FedgeClient
from fedge.transport.server import ServerTls, start_server

pytestmark = pytest.mark.integration  # a real TLS server on loopback


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[tuple[CoordinatorService, FedgeClient, str]]:
    """The service after two rounds of job "digits", an mTLS server, and alice's client."""
    clock = Clock()
    svc = make_service(tmp_path, clock)
    svc.admin.create_job(ADMIN, spec(rounds=2))
    run_plain_round(svc, clock, 1)
    run_plain_round(svc, clock, 2)
    pki = init_pki(tmp_path / "pki", "audit-test")
    issue(pki.directory, "coordinator", "coord", hosts=["127.0.0.1"])
    alice = issue(pki.directory, "admin", "alice")
    app = build_app(
        device=svc, uplink=svc, admin=svc.admin, verifier=PeerVerifier(pki.ca_cert, pki.crl)
    )
    tls = ServerTls(pki.ca_cert, pki.cert_for("coord"), pki.key_for("coord"), crl=pki.crl)
    with start_server(app, "127.0.0.1", 0, tls) as server:
        client = FedgeClient(server.url, ca=pki.ca_cert, cert=alice.cert_path, key=alice.key_path)
        with client:
            yield svc, client, format(alice.identity.serial, "x")
    svc.store.close()


def test_a_promotion_and_a_rollback_over_the_admin_api_name_the_admin(
    coordinator: tuple[CoordinatorService, FedgeClient, str],
) -> None:
    svc, alice, serial = coordinator
    versions = {v.round: v for v in alice.list_models("digits")}
    (before,) = [v for v in versions.values() if v.status == "production"]
    target = next(versions[r] for r in (2, 1) if versions[r].status in ("candidate", "retired"))
    audit = svc.driver.audit
    seen = len(audit.entries())

    promoted = alice.promote_model(target.sha256)
    assert (promoted.sha256, promoted.status) == (target.sha256, "production")
    restored = alice.rollback_model("digits")
    assert restored.sha256 == before.sha256 and restored.status == "production"
    assert alice.get_model(target.sha256).status == "rolled_back"

    report = audit.verify()
    assert report.intact, report.broken
    new = [e for e in audit.entries()[seen:] if e.kind != "enrolment"]
    assert [(e.kind, e.actor, e.subject) for e in new] == [
        ("promotion", "alice", target.sha256),
        ("rollback", "alice", "digits"),
    ]
    promotion, rollback = new
    assert promotion.details["job"] == "digits"
    assert rollback.details["rolled_back"] == target.sha256
    assert rollback.details["restored"] == before.sha256
    for entry in new:  # who, as the certificate says: its role and serial
        assert entry.details["admin"] == {"role": "admin", "serial": serial}
    (enrolled,) = [e for e in audit.entries() if e.kind == "enrolment" and e.subject == "alice"]
    assert enrolled.details["serial"] == serial  # alice's first contact enrolled her
    assert alice.get_model(target.sha256).status_reason == "rolled back by alice"
    assert alice.get_model(before.sha256).status_reason == "restored: rolled back by alice"
