"""The device's local training data: a SQLite file with a retention window.

Collectors :meth:`~LocalStore.append` rows as they observe them; training reads
:meth:`~LocalStore.examples`, which first drops rows older than ``retention_s``. Nothing here
talks to the network: the rows stay on the device, only model updates leave it. Rows are stored
as raw little-endian float32 blobs of a fixed width (set by the first append), labels as integers.
"""

from __future__ import annotations

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
    y INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS examples_at ON examples (at);
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class LocalStore:
    """Labelled float32 rows, kept for ``retention_s`` seconds after they were appended."""

    def __init__(
        self,
        path: str | Path,
        retention_s: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not retention_s > 0:
            raise DataError(f"retention_s must be > 0 seconds, got {retention_s}")
        self.path = str(path)
        self.retention_s = float(retention_s)
        self.clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        with self._db:
            self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM store_meta WHERE key = 'width'").fetchone()
        self._width: int | None = int(row[0]) if row else None

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
            self._db.executemany(
                "INSERT INTO examples (at, x, y) VALUES (?, ?, ?)",
                ((stamp, row.tobytes(), int(label)) for row, label in zip(x, labels, strict=True)),
            )
        return int(x.shape[0])

    def prune(self) -> int:
        """Delete rows older than the retention window; returns how many."""
        cutoff = self.clock() - self.retention_s
        with self._lock, self._db:
            return self._db.execute("DELETE FROM examples WHERE at < ?", (cutoff,)).rowcount

    def count(self) -> int:
        """Rows within the retention window."""
        cutoff = self.clock() - self.retention_s
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM examples WHERE at >= ?", (cutoff,))
            return int(row.fetchone()[0])

    def examples(self) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """(x, y) of every row within the retention window, oldest first (prunes the rest)."""
        self.prune()
        with self._lock:
            rows = self._db.execute("SELECT x, y FROM examples ORDER BY id").fetchall()
        width = self._width or 0
        if not rows:
            return np.zeros((0, width), dtype=np.float32), np.zeros(0, dtype=np.int64)
        x = np.frombuffer(b"".join(r[0] for r in rows), dtype="<f4").reshape(len(rows), width)
        y = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        return x.astype(np.float32), y
