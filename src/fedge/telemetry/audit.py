"""The audit log's hash chain, as pure functions: no database, no clock, no I/O.

Each entry commits to the one before it::

    hash(n) = SHA-256( canonical_json({seq, at, kind, actor, subject, details, prev: hash(n-1)}) )

with ``hash(0)`` = :data:`GENESIS` (64 zeros). The canonical JSON has sorted keys, no spaces, UTF-8
and no NaN/Infinity, so the same entry hashes the same on every machine and database. Because the
sequence number is inside the hash, renumbering an entry breaks it as surely as editing it.

:func:`verify_chain` walks a log in sequence order and names the first entry that is not what was
written, and why:

- **edited**: the entry's content no longer matches its hash (or its hash was rewritten too, which
  the next entry, still committing to the old hash, gives away);
- **deleted**: a gap in the sequence numbers, or the log ends before the head the writer recorded;
- **reordered**: an intact entry standing at another place than the one it was written at (its own
  hash holds for its original sequence number, or it commits to another predecessor);
- **inserted**: entries after the recorded head (appended around the writer).

What no hash chain can catch alone is a log rewritten from some entry to its end, hashes and head
included, by someone with write access to the database. Keep the head (``fedge audit verify``
prints it) somewhere else and check against it later with ``--anchor SEQ:HASH``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

__all__ = [
    "GENESIS",
    "AuditEntry",
    "ChainBreak",
    "ChainReport",
    "canonical_json",
    "entry_hash",
    "next_entry",
    "verify_chain",
]

GENESIS = "0" * 64  # the "previous hash" of the first entry

Problem = Literal["edited", "deleted", "reordered", "inserted"]


@dataclass(frozen=True)
class AuditEntry:
    """One audit log entry: what happened (kind, subject, details), who did it, when, its links."""

    seq: int  # 1, 2, 3, ... without gaps
    at: float  # unix seconds
    kind: str  # enrolment, revocation, round, release, promotion, rollback, job.create, ...
    actor: str  # who did it: an admin's certificate name, a gateway, "coordinator", ...
    subject: str  # what it is about: a job, a device, a model version, "job/round"
    details: Mapping[str, Any]  # JSON: ids, counts, reasons; never data or updates
    prev_hash: str  # the hash of entry seq - 1 (GENESIS for the first)
    hash: str  # entry_hash of all of the above

    def to_dict(self) -> dict[str, Any]:
        """The entry as a JSON-ready dict (the form ``fedge audit export`` writes)."""
        return {
            "seq": self.seq,
            "at": self.at,
            "kind": self.kind,
            "actor": self.actor,
            "subject": self.subject,
            "details": dict(self.details),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEntry:
        """The inverse of :meth:`to_dict` (KeyError/TypeError on a malformed dict)."""
        return cls(
            seq=int(data["seq"]),
            at=float(data["at"]),
            kind=str(data["kind"]),
            actor=str(data["actor"]),
            subject=str(data["subject"]),
            details=dict(data["details"]),
            prev_hash=str(data["prev_hash"]),
            hash=str(data["hash"]),
        )


def canonical_json(
    seq: int,
    at: float,
    kind: str,
    actor: str,
    subject: str,
    details: Mapping[str, Any],
    prev_hash: str,
) -> bytes:
    """The bytes an entry's hash is taken over (sorted keys, compact, UTF-8; ValueError on NaN)."""
    if not math.isfinite(at):
        raise ValueError(f"audit entry time must be finite, not {at!r}")
    body = {
        "seq": seq,
        "at": at,
        "kind": kind,
        "actor": actor,
        "subject": subject,
        "details": details,
        "prev": prev_hash,
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def entry_hash(entry: AuditEntry) -> str:
    """The SHA-256 (hex) an entry should carry, recomputed from its content and ``prev_hash``."""
    body = canonical_json(
        entry.seq, entry.at, entry.kind, entry.actor, entry.subject, entry.details, entry.prev_hash
    )
    return hashlib.sha256(body).hexdigest()


def next_entry(
    head: tuple[int, str],
    at: float,
    kind: str,
    actor: str,
    subject: str,
    details: Mapping[str, Any],
) -> AuditEntry:
    """The entry that follows ``head`` = (seq, hash) of the last entry ((0, GENESIS): the first).

    ``details`` must survive a JSON round trip unchanged (str keys; str, int, finite float, bool,
    None, lists and dicts of those), since the stored copy is what verification rehashes; it is
    passed through one here, and NaN or Infinity is a ValueError.
    """
    details = json.loads(json.dumps(details, allow_nan=False))
    seq, prev_hash = head
    entry = AuditEntry(seq + 1, at, kind, actor, subject, details, prev_hash, hash="")
    return replace(entry, hash=entry_hash(entry))


@dataclass(frozen=True)
class ChainBreak:
    """The first entry that is not what was written, what happened to it, and how we know."""

    seq: int
    problem: Problem
    detail: str

    def __str__(self) -> str:
        return f"entry #{self.seq} {self.problem}: {self.detail}"


@dataclass(frozen=True)
class ChainReport:
    """The outcome of :func:`verify_chain`: how many entries, the head, and the first break."""

    entries: int
    head_seq: int  # the last entry's sequence number (0: empty log)
    head_hash: str  # the last entry's hash (GENESIS: empty log)
    broken: ChainBreak | None

    @property
    def intact(self) -> bool:
        """True when no entry was edited, deleted, reordered or inserted."""
        return self.broken is None


def _original_places(entries: Sequence[AuditEntry]) -> dict[str, int]:
    """Where each entry was written, read from the links alone (hash -> place in the chain)."""
    by_prev: dict[str, AuditEntry] = {}
    for e in entries:
        by_prev.setdefault(e.prev_hash, e)
    places: dict[str, int] = {}
    link, place = GENESIS, 1
    while link in by_prev and by_prev[link].hash not in places:
        places[by_prev[link].hash] = place
        link, place = by_prev[link].hash, place + 1
    return places


def _first_break(entries: Sequence[AuditEntry]) -> ChainBreak | None:
    hashes = {e.hash: e for e in entries}
    places = _original_places(entries)
    expected_seq, expected_prev = 1, GENESIS
    for e in entries:
        if e.seq != expected_seq:
            missing = (
                f"#{expected_seq}" if e.seq == expected_seq + 1 else f"#{expected_seq}–#{e.seq - 1}"
            )
            return ChainBreak(
                expected_seq, "deleted", f"{missing} missing: the sequence jumps to #{e.seq}"
            )
        if entry_hash(e) != e.hash:
            written = places.get(e.hash)
            if (
                written is not None
                and written != e.seq
                and entry_hash(replace(e, seq=written)) == e.hash
            ):
                return ChainBreak(
                    e.seq, "reordered", f"it was written as #{written} and now stands at #{e.seq}"
                )
            return ChainBreak(
                e.seq, "edited", f"its content ({e.kind} {e.subject}) no longer matches its hash"
            )
        if e.prev_hash != expected_prev:
            if e.prev_hash in hashes:
                was = hashes[e.prev_hash].seq
                return ChainBreak(
                    e.seq, "reordered", f"it was written after #{was}, not after #{e.seq - 1}"
                )
            return ChainBreak(
                e.seq - 1,
                "edited",
                f"its hash was rewritten: #{e.seq} still commits to {e.prev_hash[:16]}…",
            )
        expected_seq, expected_prev = e.seq + 1, e.hash
    return None


def _check_anchor(entries: Sequence[AuditEntry], seq: int, want: str) -> ChainBreak | None:
    found = [e for e in entries if e.seq == seq]
    if not found:
        last = entries[-1].seq if entries else 0
        return ChainBreak(seq, "deleted", f"the anchor names #{seq} but the log ends at #{last}")
    if found[0].hash != want:
        return ChainBreak(
            seq, "edited", f"its hash {found[0].hash[:16]}… is not the anchor's {want[:16]}…: "
            "the log was rewritten from here or earlier"
        )  # fmt: skip
    return None


def verify_chain(
    entries: Sequence[AuditEntry],
    head: tuple[int, str] | None = None,
    anchor: tuple[int, str] | None = None,
) -> ChainReport:
    """Check a log given in ``seq`` order.

    ``head`` is (seq, hash) of the last entry as the writer recorded it, which also catches
    entries removed from the end; ``anchor`` is (seq, hash) of an entry as an auditor noted it
    earlier, which also catches a log rewritten from some entry on, hashes and head included.
    """
    last_seq = entries[-1].seq if entries else 0
    last_hash = entries[-1].hash if entries else GENESIS
    broken = _first_break(entries)
    if broken is None and anchor is not None:
        broken = _check_anchor(entries, *anchor)
    if broken is None and head is not None:
        head_seq, head_hash = head
        if head_seq > last_seq:
            first = last_seq + 1
            what = f"#{first}" if head_seq == first else f"#{first}–#{head_seq}"
            broken = ChainBreak(
                first, "deleted", f"{what} missing: the log ends at #{last_seq}, its head at "
                f"#{head_seq}"
            )  # fmt: skip
        elif head_seq < last_seq:
            broken = ChainBreak(
                head_seq + 1, "inserted", f"the head is #{head_seq}: #{head_seq + 1}–#{last_seq} "
                "were added around the log's writer"
            )  # fmt: skip
        elif head_hash != last_hash:
            broken = ChainBreak(
                last_seq, "edited", f"its hash {last_hash[:16]}… is not the head's "
                f"{head_hash[:16]}…"
            )  # fmt: skip
    return ChainReport(len(entries), last_seq, last_hash, broken)
