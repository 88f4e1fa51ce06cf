"""The device's own privacy ledger: ε spent per job, and a limit the device owner sets.

A guarantee the device enforces itself, whatever the coordinator claims: before accepting a task
the device asks :meth:`PrivacyLedger.can_accept` with the job's ε *after* this task (the
coordinator's accountant -- or, under local DP, :func:`fedge.privacy.accountant.local_epsilon` for
the rounds this device has taken part in), and declines when the total would pass its limit.

Within one job ε is already composed by the job's accountant, so the ledger keeps the job's latest
cumulative ε (it never decreases). Across jobs it uses basic composition -- the sum of the jobs' ε
-- which is valid for any mechanisms and any δ's (the δ's add up too). Stored in a SQLite file with
the standard library's :mod:`sqlite3`, one row per job, so a restarted device remembers.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from types import TracebackType

from fedge.errors import ConfigError, PrivacyBudgetExceeded

__all__ = ["PrivacyLedger"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS privacy_spent (
    job TEXT PRIMARY KEY,
    epsilon REAL NOT NULL CHECK (epsilon >= 0),
    rounds INTEGER NOT NULL DEFAULT 0
)
"""


class PrivacyLedger:
    """ε spent per job on this device, with the owner's limit on the total."""

    def __init__(self, path: str | Path, limit: float) -> None:
        if not (limit > 0 and not math.isnan(limit)):
            raise ConfigError(
                f"the device's privacy limit must be > 0 (e.g. 10.0, or inf for none), got {limit}"
            )
        self.limit = float(limit)
        self.path = str(path)
        self._db = sqlite3.connect(self.path)
        with self._db:
            self._db.execute(_SCHEMA)

    def close(self) -> None:
        """Close the database file."""
        self._db.close()

    def __enter__(self) -> PrivacyLedger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def spent(self, job: str) -> float:
        """ε this device has spent on ``job`` (0 if it never took part)."""
        row = self._db.execute("SELECT epsilon FROM privacy_spent WHERE job = ?", (job,)).fetchone()
        return float(row[0]) if row else 0.0

    def total_spent(self, *, excluding: str | None = None) -> float:
        """ε spent over all jobs (basic composition), optionally leaving one job out."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(epsilon), 0) FROM privacy_spent WHERE job IS NOT ?", (excluding,)
        ).fetchone()
        return float(row[0])

    def jobs(self) -> dict[str, float]:
        """Every job on record with its ε."""
        return {
            str(j): float(e)
            for j, e in self._db.execute("SELECT job, epsilon FROM privacy_spent ORDER BY job")
        }

    def can_accept(self, job: str, epsilon_if_accepted: float) -> bool:
        """True if taking the task (job's ε becomes ``epsilon_if_accepted``) stays within the limit."""
        if not epsilon_if_accepted >= 0:  # also refuses NaN
            return False
        job_eps = max(self.spent(job), epsilon_if_accepted)
        return self.total_spent(excluding=job) + job_eps <= self.limit

    def require(self, job: str, epsilon_if_accepted: float) -> None:
        """Raise :class:`PrivacyBudgetExceeded` (saying by how much) unless the task fits."""
        if not self.can_accept(job, epsilon_if_accepted):
            other = self.total_spent(excluding=job)
            raise PrivacyBudgetExceeded(
                f"device declines job {job!r}: its ε would become {epsilon_if_accepted:.4g}, and "
                f"with {other:.4g} already spent on other jobs the total would pass this "
                f"device's limit of {self.limit:g}. The owner can raise the limit; the job can "
                "add noise or use fewer rounds"
            )

    def record(self, job: str, epsilon: float, rounds: int = 1) -> None:
        """Record that ``job``'s ε on this device is now ``epsilon`` (checked against the limit)."""
        self.require(job, epsilon)
        with self._db:
            self._db.execute(
                "INSERT INTO privacy_spent (job, epsilon, rounds) VALUES (?, ?, ?) "
                "ON CONFLICT(job) DO UPDATE SET epsilon = MAX(epsilon, excluded.epsilon), "
                "rounds = rounds + excluded.rounds",
                (job, float(epsilon), int(rounds)),
            )
