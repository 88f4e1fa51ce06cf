"""The coordinator's audit log: the hash chain of :mod:`fedge.telemetry.audit` in its database.

Two tables beside the :class:`~fedge.coordinator.store.Store`'s (same engine): ``audit_log``, the
entries, and ``audit_head``, one row holding the last entry's (seq, hash) that every append
updates. **Appends are serialised by that row**: an append's first statement is an UPDATE of it,
which takes PostgreSQL's row lock (later statements of the transaction then read the committed
head, READ COMMITTED) and SQLite's database write lock (taken before anything is read, so no
stale snapshot); the next writer waits. Should anything slip past the lock, ``prev_hash`` is
unique in the table, so two entries can never follow the same one and the chain cannot fork.

What is recorded (kind: details), never data or updates:

- ``enrolment``: a device's, gateway's or admin's first contact with its certificate (role, site,
  serial, expiry), or a device first counted through a gateway (``via``);
- ``round``: a round's outcome and who took part (device ids, gateway ids, direct devices);
- ``release``: a model version published (job, round, parent, signed or not);
- ``promotion``, ``rejection``, ``rollback``: registry moves, by an admin, the release gate
  (``release-gate``) or a halted canary stage (``canary``: rolled back, restored, the reason);
- ``rollout``: a canary stage started or widened (actor ``canary``: the version, the previous
  one, the canary gateways, the manifest, the reason; :mod:`fedge.coordinator.rollouts`);
- ``refusal``: a model version a device or gateway refused (actor: the reporter; the version,
  tier, forwarding gateway, failed check, reason, manifest), once per version, reporter and
  check (:mod:`fedge.coordinator.rollouts`);
- ``revocation``: by an admin through the API, or with ``fedge pki revoke`` (actor ``pki``: a
  serial new on the CRL the coordinator reloaded, :mod:`fedge.coordinator.revocations`);
- ``job.create``/``job.pause``/``job.resume``: admin actions.

Admin entries name the admin (``actor``: certificate name; ``details``: its role and serial).
The ``record_*`` methods never raise: the action they describe has already taken effect, so a
failed append is logged as an error (with what to do) rather than undoing or breaking it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import func, inspect, select, update
from sqlalchemy.engine import CursorResult, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from fedge.coordinator.schema import AuditEntryRow, AuditHeadRow, ModelVersionRow, ParticipantRow
from fedge.errors import ConfigError, ProtocolError
from fedge.telemetry.audit import (
    GENESIS,
    AuditEntry,
    ChainReport,
    entry_hash,
    next_entry,
    verify_chain,
)

if TYPE_CHECKING:
    from fedge.identity import Identity

__all__ = ["AuditLog"]

log = logging.getLogger(__name__)

_HEAD_ID = 1


def _entry(row: AuditEntryRow) -> AuditEntry:
    return AuditEntry(
        row.seq, row.at, row.kind, row.actor, row.subject, row.details, row.prev_hash, row.hash
    )


def certificate_details(peer: Identity) -> dict[str, Any]:
    """What the log keeps of a certificate: role, site, serial (hex) and expiry."""
    return {
        "role": str(peer.role),
        "site": peer.site,
        "serial": format(peer.serial, "x"),
        "not_after": peer.not_after.isoformat(),
    }


class AuditLog:
    """Serialised appends to, and reads of, the audit log in one coordinator database."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine, self.clock = engine, clock
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._enrolled: set[tuple[str, str, str | None]] = set()  # (role, name, serial) seen
        self._known: set[tuple[str, str]] = set()  # (role, name) enrolled with any certificate
        self._head_ready = False

    # -- writing ------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[tuple[Session, list[int | str]]]:
        """A transaction holding the append lock; yields it and the head [seq, hash] to move."""
        if not self._head_ready:
            self._create_head()
        with self._sessions.begin() as s:
            # the lock: a write before any read (SQLite: the write lock; PostgreSQL: the row lock)
            stmt = update(AuditHeadRow).where(AuditHeadRow.id == _HEAD_ID)
            held = cast(CursorResult[Any], s.execute(stmt.values(seq=AuditHeadRow.seq)))
            row = s.get(AuditHeadRow, _HEAD_ID) if held.rowcount else None
            if row is None:
                raise ProtocolError(
                    "the audit log has entries but its head row is gone: someone removed it; run "
                    "`fedge audit verify` and restore the database from a backup"
                )
            head: list[int | str] = [row.seq, row.hash]
            yield s, head
            row.seq, row.hash = int(head[0]), str(head[1])

    def _create_head(self) -> None:
        """Make the head row of an empty log (once; a writer racing us to it is fine)."""
        try:
            with self._sessions.begin() as s:
                if s.get(AuditHeadRow, _HEAD_ID) is None and not s.scalar(
                    select(func.count()).select_from(AuditEntryRow)
                ):
                    s.add(AuditHeadRow(id=_HEAD_ID, seq=0, hash=GENESIS))
        except IntegrityError:
            pass  # another writer made it first
        self._head_ready = True

    def _append_locked(
        self,
        s: Session,
        head: list[int | str],
        kind: str,
        actor: str,
        subject: str,
        details: Mapping[str, Any],
    ) -> AuditEntry:
        entry = next_entry(
            (int(head[0]), str(head[1])), self.clock(), kind, actor, subject, details
        )
        s.add(
            AuditEntryRow(
                seq=entry.seq,
                at=entry.at,
                kind=entry.kind,
                actor=entry.actor,
                subject=entry.subject,
                details=dict(entry.details),
                prev_hash=entry.prev_hash,
                hash=entry.hash,
            )
        )
        s.flush()
        head[:] = [entry.seq, entry.hash]
        return entry

    def append(
        self, kind: str, actor: str, subject: str, details: Mapping[str, Any] | None = None
    ) -> AuditEntry:
        """Append one entry (serialised with every other writer); returns it, hashed."""
        with self._locked() as (s, head):
            return self._append_locked(s, head, kind, actor, subject, details or {})

    def _enrol_locked(
        self,
        s: Session,
        head: list[int | str],
        role: str,
        name: str,
        details: Mapping[str, Any],
        actor: str,
        *,
        any_certificate: bool = False,
    ) -> None:
        """Enrol (role, name) unless the log has it with this serial (or with any, if asked)."""
        serial = details.get("serial")
        q = select(AuditEntryRow.details).where(
            AuditEntryRow.kind == "enrolment", AuditEntryRow.subject == name
        )
        seen = [d.get("serial") for d in s.scalars(q) if d.get("role") == role]
        if not seen or (serial not in seen and not any_certificate):
            self._append_locked(s, head, "enrolment", actor, name, details)
        self._enrolled.add((role, name, serial))
        self._known.add((role, name))

    def _safely(self, what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except (SQLAlchemyError, ProtocolError, ValueError) as exc:
            log.error(
                "audit log: could not record %s (%s); it took effect but is not in the log — "
                "check the database and run `fedge audit verify`",
                what,
                exc,
            )

    # -- what the coordinator records -----------------------------------------------------------
    def record_contact(self, peer: Identity) -> None:
        """Enrol a peer at its first contact with this certificate (cheap after the first time)."""
        self.record_contacts([peer])

    def record_contacts(self, peers: Sequence[Identity], via: str | None = None) -> None:
        """Enrol peers first seen with these certificates, in one transaction; ``via``: the
        gateway that presented them (devices registered by their site's gateway)."""
        new = []
        for peer in peers:
            details = certificate_details(peer)
            if (details["role"], peer.name, details["serial"]) not in self._enrolled:
                new.append((peer.name, details if via is None else {**details, "via": via}))
        if not new:
            return

        def enrol() -> None:
            with self._locked() as (s, head):
                for name, details in new:
                    self._enrol_locked(s, head, details["role"], name, details, via or name)

        self._safely(f"the enrolment of {', '.join(name for name, _ in new)}", enrol)

    def record_admin(
        self, peer: Identity, kind: str, subject: str, details: Mapping[str, Any] | None = None
    ) -> None:
        """An admin action, with the admin's identity (enrolled too at first sight)."""
        self.record_contact(peer)
        who = certificate_details(peer)
        full = {**(details or {}), "admin": {"role": who["role"], "serial": who["serial"]}}
        self._safely(
            f"{kind} {subject} by {peer.name!r}",
            lambda: self.append(kind, peer.name, subject, full),
        )

    def record_round(
        self, job_id: str, number: int, outcome: str, *, model_sha256: str | None, reason: str = ""
    ) -> None:
        """A round's outcome and who took part (from the ``participants`` table, in the same
        transaction); devices first heard of here are enrolled, via their gateway."""

        def write() -> None:
            with self._locked() as (s, head):
                q = select(ParticipantRow).where(
                    ParticipantRow.job_id == job_id, ParticipantRow.round == number
                )
                rows = list(s.scalars(q.order_by(ParticipantRow.device_id)))
                for p in rows:  # a device registered or checked in before is enrolled
                    if ("device", p.device_id) not in self._known:
                        via = {"role": "device", "serial": None, "via": p.gateway_id}
                        actor = p.gateway_id or "coordinator"
                        self._enrol_locked(
                            s, head, "device", p.device_id, via, actor, any_certificate=True
                        )
                details = {
                    "job": job_id,
                    "round": number,
                    "outcome": outcome,
                    "devices": [p.device_id for p in rows],
                    "gateways": sorted({p.gateway_id for p in rows if p.gateway_id is not None}),
                    "direct_devices": [p.device_id for p in rows if p.gateway_id is None],
                    "model_sha256": model_sha256,
                    "reason": reason,
                }
                self._append_locked(s, head, "round", "coordinator", f"{job_id}/{number}", details)

        self._safely(f"round {number} of job {job_id!r}", write)

    def record_release(self, version: ModelVersionRow, *, signed: bool) -> None:
        """A model version published (the initial one or a round's)."""
        details = {
            "job": version.job_id,
            "round": version.round,
            "parent_sha256": version.parent_sha256,
            "size": version.size,
            "signed": signed,
        }
        self.record("release", "coordinator", version.sha256, details)

    def record(
        self, kind: str, actor: str, subject: str, details: Mapping[str, Any] | None = None
    ) -> None:
        """Append one entry, logging (not raising) a failure: the event has already happened."""
        self._safely(f"{kind} {subject}", lambda: self.append(kind, actor, subject, details))

    # -- reading ------------------------------------------------------------------------------
    def check_present(self) -> None:
        """ConfigError when the database has no audit log (not a fedge coordinator database)."""
        tables = set(inspect(self.engine).get_table_names())
        if not {"audit_log", "audit_head"} <= tables:
            raise ConfigError(
                f"{self.engine.url.render_as_string(hide_password=True)} has no audit log "
                "(tables audit_log, audit_head): is it a fedge coordinator's database?"
            )

    def head(self) -> tuple[int, str] | None:
        """(seq, hash) of the last entry as the writer recorded it; None before the first."""
        with self._sessions.begin() as s:
            row = s.get(AuditHeadRow, _HEAD_ID)
            return None if row is None else (row.seq, row.hash)

    def entries(self, after: int = 0, kinds: Iterable[str] | None = None) -> list[AuditEntry]:
        """Entries with ``seq > after`` (of ``kinds`` only, when given), in sequence order."""
        q = select(AuditEntryRow).where(AuditEntryRow.seq > after).order_by(AuditEntryRow.seq)
        if kinds is not None:
            q = q.where(AuditEntryRow.kind.in_(list(kinds)))
        with self._sessions.begin() as s:
            return [_entry(r) for r in s.scalars(q)]

    def verify(self, anchor: tuple[int, str] | None = None) -> ChainReport:
        """Check the whole log against its hashes, its head and (optionally) an auditor's anchor.

        An intact log is checked streaming, in batches (memory stays flat however long it is);
        only a broken one is read whole, to name its first break and what happened to it.
        """
        head = self.head()
        clean = self._streams_clean(head, anchor)
        if clean is not None:
            return clean
        entries = self.entries()
        if head is None and entries:
            head = (0, GENESIS)  # the head row was removed: every entry counts as inserted
        return verify_chain(entries, head, anchor)

    def _streams_clean(
        self, head: tuple[int, str] | None, anchor: tuple[int, str] | None
    ) -> ChainReport | None:
        """The report of an intact log, read in batches; None at the first sign of a break."""
        seq, last = 0, GENESIS
        anchored = anchor is None
        with self._sessions.begin() as s:
            rows = s.scalars(select(AuditEntryRow).order_by(AuditEntryRow.seq)).yield_per(2000)
            for row in rows:
                e = _entry(row)
                if e.seq != seq + 1 or e.prev_hash != last or entry_hash(e) != e.hash:
                    return None
                seq, last = e.seq, e.hash
                anchored = anchored or (anchor is not None and anchor == (seq, last))
                s.expunge(row)  # keep the session from holding every row read
        if not anchored or (head if head is not None else (0, GENESIS)) != (seq, last):
            return None
        return ChainReport(seq, seq, last, None)
