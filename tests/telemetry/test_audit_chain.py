"""The audit hash chain as pure functions: building, verifying, and naming the first break."""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace

import pytest

from fedge.telemetry.audit import (
    GENESIS,
    AuditEntry,
    canonical_json,
    entry_hash,
    next_entry,
    verify_chain,
)


def chain(n: int) -> list[AuditEntry]:
    """n linked entries, as a writer would append them."""
    out: list[AuditEntry] = []
    head = (0, GENESIS)
    for i in range(1, n + 1):
        e = next_entry(head, 1000.0 + i, "round", "coordinator", f"job/{i}", {"devices": [f"d{i}"]})
        out.append(e)
        head = (e.seq, e.hash)
    return out


def test_hash_is_sha256_of_the_canonical_entry_and_its_predecessor() -> None:
    e = next_entry((0, GENESIS), 1.5, "enrolment", "gw-a", "gw-a", {"site": "a", "role": "gw"})
    body = b'{"actor":"gw-a","at":1.5,"details":{"role":"gw","site":"a"},"kind":"enrolment",'
    body += b'"prev":"' + GENESIS.encode() + b'","seq":1,"subject":"gw-a"}'
    assert canonical_json(1, 1.5, "enrolment", "gw-a", "gw-a", e.details, GENESIS) == body
    assert e.hash == hashlib.sha256(body).hexdigest() == entry_hash(e)
    second = next_entry((e.seq, e.hash), 2.0, "x", "y", "z", {})
    assert (second.seq, second.prev_hash) == (2, e.hash)


def test_details_must_be_plain_json() -> None:
    with pytest.raises(ValueError):
        next_entry((0, GENESIS), 1.0, "k", "a", "s", {"accuracy": math.nan})
    with pytest.raises(ValueError):
        next_entry((0, GENESIS), math.inf, "k", "a", "s", {})
    e = next_entry((0, GENESIS), 1.0, "k", "a", "s", {"ids": ("a", "b")})
    assert e.details == {"ids": ["a", "b"]}  # stored as JSON gives it back: hashed that way


def test_an_intact_chain_verifies_with_its_head() -> None:
    log = chain(6)
    report = verify_chain(log, (6, log[-1].hash))
    assert report.intact and report.entries == 6
    assert (report.head_seq, report.head_hash) == (6, log[-1].hash)
    assert verify_chain([], (0, GENESIS)).intact


def test_an_edited_entry_is_named() -> None:
    log = chain(6)
    log[2] = replace(log[2], details={"devices": ["intruder"]})
    broken = verify_chain(log).broken
    assert broken is not None and (broken.seq, broken.problem) == (3, "edited")


def test_an_edit_with_its_hash_recomputed_is_given_away_by_the_next_entry() -> None:
    log = chain(6)
    forged = replace(log[2], actor="someone-else")
    log[2] = replace(forged, hash=entry_hash(forged))
    broken = verify_chain(log).broken
    assert broken is not None and (broken.seq, broken.problem) == (3, "edited")
    assert "rewritten" in broken.detail


def test_a_deleted_entry_is_named() -> None:
    log = chain(6)
    del log[3]
    broken = verify_chain(log).broken
    assert broken is not None and (broken.seq, broken.problem) == (4, "deleted")


def test_entries_deleted_from_the_end_are_caught_by_the_head() -> None:
    log = chain(6)
    head = (6, log[-1].hash)
    assert verify_chain(log[:4]).intact  # without the head, a shorter log looks whole
    broken = verify_chain(log[:4], head).broken
    assert broken is not None and (broken.seq, broken.problem) == (5, "deleted")


def test_reordered_entries_are_named() -> None:
    log = chain(6)
    a, b = log[2], log[3]
    log[2], log[3] = replace(b, seq=3), replace(a, seq=4)  # the rows swap their numbers
    broken = verify_chain(log).broken
    assert broken is not None and (broken.seq, broken.problem) == (3, "reordered")
    assert "written as #4" in broken.detail


def test_entries_after_the_head_are_inserted() -> None:
    log = chain(6)
    broken = verify_chain(log, (5, log[4].hash)).broken
    assert broken is not None and (broken.seq, broken.problem) == (6, "inserted")


def test_an_anchor_catches_a_log_rewritten_to_its_end() -> None:
    log = chain(6)
    anchor = (4, log[3].hash)
    rewritten = log[:2]
    head = (2, log[1].hash)
    for e in log[2:]:  # rewrite #3 onwards, links and hashes all consistent
        forged = next_entry(head, e.at, e.kind, "forger", e.subject, e.details)
        rewritten.append(forged)
        head = (forged.seq, forged.hash)
    assert verify_chain(rewritten, head).intact
    broken = verify_chain(rewritten, head, anchor).broken
    assert broken is not None and (broken.seq, broken.problem) == (4, "edited")


def test_export_form_round_trips() -> None:
    e = chain(1)[0]
    assert AuditEntry.from_dict(e.to_dict()) == e
