"""The device's local training data: a SQLite file with a retention window and a holdout.

Collectors :meth:`~LocalStore.append` rows as they observe them; training reads
:meth:`~LocalStore.examples`, which first drops rows older than ``retention_s``. Nothing here
talks to the network: the rows stay on the device, only model updates leave it. Rows are stored
as raw little-endian float32 blobs of a fixed width (set by the first append), labels as integers.

**Holdout.** With ``holdout_fraction`` > 0 a deterministic share of the appended rows (windows)
is marked as holdout when it is appended, and is never trained on: :meth:`~LocalStore.examples`
leaves it out, :meth:`~LocalStore.holdout` reads it (the serving health check's accuracy on data
the model did not see). Which rows: the store counts every row ever appended (``store_meta``,
so across restarts and retention), and row number ``n`` (0-based) is holdout when
``floor((n + 1) * f) > floor(n * f)`` -- evenly spread, exactly ``floor(N * f)`` of the first N
rows, the same on every run. A change of the fraction applies to rows appended after it.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import numpy as np
from numpy.typing import NDArray

from fedge.errors import DataError

__all__ = ["LocalStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS examples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    x BLOB NOT NULL,
    y INTEGER NOT NULL,
    holdout INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS examples_at ON examples (at);
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def is_holdout(n: int, fraction: float) -> bool:
    """Whether row number ``n`` (0-based, in append order) is holdout under ``fraction``."""
    return math.floor((n + 1) * fraction) > math.floor(n * fraction)


class LocalStore:
    """Labelled float32 rows, kept for ``retention_s`` seconds after they were appended; a
    ``holdout_fraction`` of them is held out of training (see the module's docstring)."""

    def __init__(
        self,
        path: str | Path,
        retention_s: float,
        *,
        holdout_fraction: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not retention_s > 0:
            raise DataError(f"retention_s must be > 0 seconds, got {retention_s}")
        if not 0.0 <= holdout_fraction < 1.0:
            raise DataError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
        self.path = str(path)
        self.retention_s = float(retention_s)
        self.holdout_fraction = float(holdout_fraction)
        self.clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        with self._db:
            self._db.executescript(_SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(examples)")}
            if "holdout" not in columns:  # a store made before the holdout existed
                self._db.execute(
                    "ALTER TABLE examples ADD COLUMN holdout INTEGER NOT NULL DEFAULT 0"
                )
        self._width: int | None = self._meta_int("width")
        appended = self._meta_int("appended")
        if appended is None:  # a store made before the count existed: its rows so far
            appended = int(
                self._db.execute("SELECT COALESCE(MAX(id), 0) FROM examples").fetchone()[0]
            )
        self._appended = appended

    @property
    def appended(self) -> int:
        """Rows ever appended, including those the retention window has dropped since."""
        with self._lock:
            return self._appended

    def _meta_int(self, key: str) -> int | None:
        row = self._db.execute("SELECT value FROM store_meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else None

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def width(self) -> int | None:
        """Features per row (fixed by the first append), or None while empty."""
        return self._width

    def append(self, x_rows: np.ndarray, y: np.ndarray, *, at: float | None = None) -> int:
        """Add labelled rows observed at ``at`` (default: now); returns how many."""
        x = np.asarray(x_rows, dtype="<f4")
        labels = np.asarray(y, dtype=np.int64)
        if x.ndim != 2 or labels.shape != (x.shape[0],):
            raise DataError(
                f"expected rows (n, features) and n labels, got {x.shape}, {labels.shape}"
            )
        if not np.isfinite(x).all():
            raise DataError("rows must be finite numbers")
        stamp = self.clock() if at is None else float(at)
        with self._lock, self._db:
            if self._width is None:
                self._width = int(x.shape[1])
                self._db.execute(
                    "INSERT INTO store_meta (key, value) VALUES ('width', ?)", (str(self._width),)
                )
            elif x.shape[1] != self._width:
                raise DataError(f"rows have {x.shape[1]} features; this store holds {self._width}")
            first, f = self._appended, self.holdout_fraction
            self._db.executemany(
                "INSERT INTO examples (at, x, y, holdout) VALUES (?, ?, ?, ?)",
                (
                    (stamp, row.tobytes(), int(label), int(f > 0 and is_holdout(first + i, f)))
                    for i, (row, label) in enumerate(zip(x, labels, strict=True))
                ),
            )
            self._appended = first + int(x.shape[0])
            self._db.execute(
                "INSERT OR REPLACE INTO store_meta (key, value) VALUES ('appended', ?)",
                (str(self._appended),),
            )
        return int(x.shape[0])

    def prune(self) -> int:
        """Delete rows older than the retention window; returns how many."""
        cutoff = self.clock() - self.retention_s
        with self._lock, self._db:
            return self._db.execute("DELETE FROM examples WHERE at < ?", (cutoff,)).rowcount

    def count(self, *, holdout: bool | None = None) -> int:
        """Rows within the retention window: all of them (``holdout`` None), the training rows
        (False) or the holdout rows (True)."""
        cutoff = self.clock() - self.retention_s
        where, args = "at >= ?", [cutoff]
        if holdout is not None:
            where, args = where + " AND holdout = ?", [cutoff, int(holdout)]
        with self._lock:
            row = self._db.execute(f"SELECT COUNT(*) FROM examples WHERE {where}", args)
            return int(row.fetchone()[0])

    def training_count(self) -> int:
        """Rows within the retention window that training may use (the holdout left out)."""
        return self.count(holdout=False)

    def examples(self) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """(x, y) of every training row within the retention window, oldest first (prunes the
        rest); holdout rows are left out."""
        self.prune()
        with self._lock:
            rows = self._db.execute(
                "SELECT x, y FROM examples WHERE holdout = 0 ORDER BY id"
            ).fetchall()
        return self._arrays(rows)

    def holdout(self, limit: int | None = None) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """(x, y) of the holdout rows within the retention window, oldest first; the newest
        ``limit`` of them when given. Never trained on."""
        self.prune()
        with self._lock:
            if limit is None:
                q = "SELECT x, y FROM examples WHERE holdout = 1 ORDER BY id"
                rows = self._db.execute(q).fetchall()
            else:
                q = "SELECT x, y FROM examples WHERE holdout = 1 ORDER BY id DESC LIMIT ?"
                rows = self._db.execute(q, (max(0, int(limit)),)).fetchall()[::-1]
        return self._arrays(rows)

    def _arrays(
        self, rows: list[tuple[bytes, int]]
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        width = self._width or 0
        if not rows:
            return np.zeros((0, width), dtype=np.float32), np.zeros(0, dtype=np.int64)
        x = np.frombuffer(b"".join(r[0] for r in rows), dtype="<f4").reshape(len(rows), width)
        y = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        return x.astype(np.float32), y
