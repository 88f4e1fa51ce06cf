"""A durable outbox: messages a gateway or device must deliver, kept until acknowledged.

One SQLite file (WAL mode, synchronous=FULL so an acknowledged ``put`` survives a crash). Each
item has a caller-chosen ``key`` (e.g. ``partial/job1/3``): ``put`` is idempotent on it, and a
delivered item is kept as a tombstone without its payload, so re-putting it after a restart does
not send it twice. Typical loop::

    for item in outbox.due(time.time()):
        try:
            client.submit_partial(...item.payload...)
            outbox.mark_delivered(item.key)
        except UnavailableError:
            outbox.mark_failed(item.key, retry_at=time.time() + backoff)
    for item in outbox.expire(time.time()):
        log.warning("gave up on %s: its deadline passed", item.key)

Delivered, discarded and expired items stay as tombstones (key, reason; no payload) so ``put``
stays idempotent across restarts; :meth:`Outbox.forget_delivered` prunes old ones. Thread-safe:
one connection guarded by a lock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fedge.errors import ConfigError, ValidationError

__all__ = ["Outbox", "OutboxItem"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    key          TEXT PRIMARY KEY,
    destination  TEXT NOT NULL,
    payload      BLOB,
    deadline     REAL,
    next_attempt REAL NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT NOT NULL DEFAULT '',
    delivered_at REAL,
    discarded    TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (delivered_at, next_attempt);
"""
_COLUMNS = "key, destination, payload, deadline, next_attempt, attempts, last_error"


@dataclass(frozen=True)
class OutboxItem:
    """One undelivered message."""

    key: str
    destination: str  # where it goes, e.g. an endpoint path or a peer URL
    payload: bytes
    deadline: float | None  # unix seconds; discarded by expire() after this (None: never)
    next_attempt: float  # unix seconds; due() from then on
    attempts: int  # failed deliveries so far
    last_error: str

    @property
    def expires_at(self) -> float | None:
        """Alias of ``deadline``."""
        return self.deadline


def _item(row: tuple[str, str, bytes, float | None, float, int, str]) -> OutboxItem:
    return OutboxItem(row[0], row[1], bytes(row[2]), row[3], row[4], row[5], row[6])


class Outbox:
    """A durable, idempotent outbox in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open outbox {self.path}: {exc}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database (pending items stay on disk)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def put(self, key: str, destination: str, payload: bytes, *, deadline: float | None) -> bool:
        """Queue ``payload`` for ``destination`` under ``key``; False if ``key`` is already known.

        A key ever queued (pending, delivered, expired or discarded) is left as it is, so callers
        may re-put after a restart without sending twice. ``deadline=None``: never expires.
        """
        if not key:
            raise ValidationError("an outbox key must be non-empty")
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO outbox (key, destination, payload, deadline, next_attempt)"
                " VALUES (?, ?, ?, ?, ?)",
                (key, destination, sqlite3.Binary(payload), deadline, 0.0),
            )
            return cursor.rowcount == 1

    def due(self, now: float, limit: int = 100, *, prefix: str = "") -> list[OutboxItem]:
        """Undelivered items whose next attempt is due and deadline not passed, oldest first;
        with ``prefix``, only those whose key starts with it (one kind of message)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE delivered_at IS NULL AND discarded IS NULL"
                " AND next_attempt <= ? AND (deadline IS NULL OR deadline > ?)"
                " AND substr(key, 1, ?) = ? ORDER BY next_attempt, rowid LIMIT ?",
                (now, now, len(prefix), prefix, limit),
            ).fetchall()
        return [_item(r) for r in rows]

    def get(self, key: str) -> OutboxItem | None:
        """The undelivered item ``key``, or None (unknown or delivered)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE key = ? AND delivered_at IS NULL AND discarded IS NULL",
                (key,),
            ).fetchone()
        return _item(row) if row else None

    def has(self, key: str) -> bool:
        """True if ``key`` was ever queued (pending, delivered, expired or discarded)."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM outbox WHERE key = ?", (key,)).fetchone()
        return row is not None

    def is_delivered(self, key: str) -> bool:
        """True once ``mark_delivered(key)`` was called."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM outbox WHERE key = ? AND delivered_at IS NOT NULL", (key,)
            ).fetchone()
        return row is not None

    def pending_items(self) -> list[OutboxItem]:
        """Every item still waiting for delivery (due or not), oldest first."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox"
                " WHERE delivered_at IS NULL AND discarded IS NULL ORDER BY rowid"
            ).fetchall()
        return [_item(r) for r in rows]

    def pending(self) -> int:
        """How many items are waiting for delivery."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND discarded IS NULL"
            ).fetchone()
        return int(row[0])

    def mark_delivered(self, key: str, *, now: float | None = None) -> None:
        """Record that ``key`` was acknowledged; its payload is dropped, the key remembered."""
        when = time.time() if now is None else now
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET delivered_at = ?, payload = NULL"
                " WHERE key = ? AND delivered_at IS NULL AND discarded IS NULL",
                (when, key),
            )

    def mark_failed(self, key: str, retry_at: float, error: str = "") -> None:
        """Record a failed attempt at ``key``; it is due again at ``retry_at``."""
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ?"
                " WHERE key = ? AND delivered_at IS NULL AND discarded IS NULL",
                (retry_at, error[:500], key),
            )

    def discard(self, key: str, reason: str) -> None:
        """Give up on ``key`` (refused for good); its payload is dropped, the key and reason kept."""
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET discarded = ?, payload = NULL"
                " WHERE key = ? AND delivered_at IS NULL AND discarded IS NULL",
                (reason[:500] or "discarded", key),
            )

    def expire(self, now: float) -> list[OutboxItem]:
        """Discard undelivered items whose deadline has passed, and return them (to report)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM outbox WHERE delivered_at IS NULL"
                    " AND discarded IS NULL AND deadline <= ?",
                    (now,),
                ).fetchall()
                self._db.execute(
                    "UPDATE outbox SET discarded = 'expired', payload = NULL"
                    " WHERE delivered_at IS NULL AND discarded IS NULL AND deadline <= ?",
                    (now,),
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return [_item(r) for r in rows]

    def forget_delivered(self, before: float) -> int:
        """Delete tombstones of items delivered before ``before``; returns how many."""
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < ?", (before,)
            )
            return cursor.rowcount
