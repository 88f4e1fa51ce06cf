"""The audit log in the coordinator's database, on SQLite and PostgreSQL: appends, tampering done
with SQL straight on the tables, and concurrent writers that must keep one chain."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from fedge.coordinator import CoordinatorService, Store
from fedge.coordinator.audit import AuditLog
from fedge.errors import ProtocolError
from fedge.identity import Role
from fedge.telemetry.audit import verify_chain

from .conftest import identity
from .helpers import ADMIN, GW_A, GW_B, Clock, checkin, make_service, run_plain_round, spec


def filled(store: Store, n: int = 6) -> AuditLog:
    audit = AuditLog(store.engine)
    for i in range(1, n + 1):
        audit.append("round", "coordinator", f"job/{i}", {"devices": [f"d{i}", f"e{i}"]})
    return audit


def sql(store: Store, *statements: str) -> None:
    with store.engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement))


def test_appended_entries_verify(store: Store) -> None:
    audit = filled(store)
    entries = audit.entries()
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[2].details == {"devices": ["d3", "e3"]}
    report = audit.verify()
    assert report.intact and report.entries == 6
    assert audit.head() == (6, entries[-1].hash) == (report.head_seq, report.head_hash)
    assert [e.seq for e in audit.entries(after=4)] == [5, 6]
    assert report == verify_chain(entries, audit.head())  # the streaming check agrees
    assert audit.verify((3, entries[2].hash)).intact
    broken = audit.verify((3, "f" * 64)).broken
    assert broken is not None and (broken.seq, broken.problem) == (3, "edited")


SWAP_3_AND_4 = (
    "UPDATE audit_log SET seq = -3 WHERE seq = 3",
    "UPDATE audit_log SET seq = 3 WHERE seq = 4",
    "UPDATE audit_log SET seq = 4 WHERE seq = -3",
)


@pytest.mark.parametrize(
    ("tampering", "seq", "problem"),
    [
        (("UPDATE audit_log SET actor = 'nobody' WHERE seq = 3",), 3, "edited"),
        (("""UPDATE audit_log SET details = '{"devices": ["d3"]}' WHERE seq = 3""",), 3, "edited"),
        (("DELETE FROM audit_log WHERE seq = 4",), 4, "deleted"),
        (("DELETE FROM audit_log WHERE seq >= 5",), 5, "deleted"),  # caught by the head
        (SWAP_3_AND_4, 3, "reordered"),
    ],
    ids=["edited-actor", "edited-details", "deleted", "deleted-at-end", "reordered"],
)
def test_tampering_in_sql_is_detected(
    store: Store, tampering: tuple[str, ...], seq: int, problem: str
) -> None:
    audit = filled(store)
    sql(store, *tampering)
    broken = audit.verify().broken
    assert broken is not None and (broken.seq, broken.problem) == (seq, problem)


def test_a_removed_head_stops_appends(store: Store) -> None:
    audit = filled(store, 2)
    sql(store, "DELETE FROM audit_head")
    with pytest.raises(ProtocolError, match="head row is gone"):
        AuditLog(store.engine).append("x", "y", "z")
    assert not audit.verify().intact


def test_concurrent_appends_keep_one_chain(store: Store) -> None:
    writers, each = 4, 15
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def write(w: int) -> None:
        audit = AuditLog(store.engine)  # its own instance, its own pooled connection
        try:
            start.wait()
            for i in range(each):
                audit.append("round", f"writer-{w}", f"job/{i}", {"i": i})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    report = AuditLog(store.engine).verify()
    assert report.intact and report.entries == writers * each
    entries = AuditLog(store.engine).entries()
    assert [e.seq for e in entries] == list(range(1, writers * each + 1))
    assert len({e.prev_hash for e in entries}) == writers * each  # no fork


# -- what the coordinator records ---------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(tmp_path: Path, clock: Clock) -> CoordinatorService:
    return make_service(tmp_path, clock)


def test_a_round_and_admin_actions_are_recorded(svc: CoordinatorService, clock: Clock) -> None:
    svc.admin.create_job(ADMIN, spec(rounds=2))
    run_plain_round(svc, clock, 1)
    svc.admin.revoke_device(ADMIN, "d4")
    other_admin = identity(Role.ADMIN, "alice")
    svc.admin.pause_job(other_admin, "digits")

    audit = svc.driver.audit
    assert audit.verify().intact
    entries = audit.entries()
    kinds = [e.kind for e in entries]
    assert kinds[:2] == ["enrolment", "job.create"]  # the admin's first contact, then its act
    create = entries[1]
    assert create.actor == "admin" and create.subject == "digits"
    assert create.details["admin"]["role"] == "admin"
    assert create.details["spec"]["task"] == "digits_mlp"
    enrolled = {e.subject: e.details for e in entries if e.kind == "enrolment"}
    assert enrolled["gw-a"]["role"] == "gateway" and enrolled["gw-a"]["site"] == "s1"
    assert enrolled["d1"]["via"] == "gw-a"  # first heard of through its gateway's partial
    (rnd,) = [e for e in entries if e.kind == "round"]
    assert rnd.subject == "digits/1" and rnd.details["outcome"] == "committed"
    assert rnd.details["devices"] == ["d1", "d2", "d3", "d4"]
    assert rnd.details["gateways"] == ["gw-a", "gw-b"]
    releases = [e for e in entries if e.kind == "release"]
    assert [r.details["round"] for r in releases] == [None, 1]
    assert releases[1].subject == rnd.details["model_sha256"]
    assert next(e for e in entries if e.kind == "promotion").actor == "release-gate"
    (revocation,) = [e for e in entries if e.kind == "revocation"]
    assert (revocation.actor, revocation.subject) == ("admin", "d4")
    pause = entries[-1]
    assert (pause.kind, pause.actor, pause.subject) == ("job.pause", "alice", "digits")
    assert entries[-2].kind == "enrolment" and entries[-2].subject == "alice"


def test_a_round_cut_short_by_a_restart_is_recorded(
    svc: CoordinatorService, clock: Clock, tmp_path: Path
) -> None:
    svc.admin.create_job(ADMIN, spec())
    checkin(svc, GW_A)
    checkin(svc, GW_B)
    svc.tick()
    assert svc.live_round("digits") is not None
    svc.store.close()
    restarted = make_service(tmp_path, clock)  # same database: round 1 was in flight
    entries = restarted.driver.audit.entries(kinds=["round"])
    assert [(e.subject, e.details["outcome"]) for e in entries] == [("digits/1", "abandoned")]
    assert "coordinator restarted" in entries[0].details["reason"]
    assert restarted.driver.audit.verify().intact
