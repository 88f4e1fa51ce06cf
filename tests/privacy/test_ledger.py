"""The device ledger refuses tasks that would overspend its owner's limit, and persists."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.errors import ConfigError, PrivacyBudgetExceeded
from fedge.privacy.ledger import PrivacyLedger


def test_ledger_refuses_overspend_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "privacy.sqlite"
    with PrivacyLedger(path, limit=5.0) as ledger:
        assert ledger.can_accept("job-a", 2.0)
        ledger.record("job-a", 1.0)
        ledger.record("job-a", 2.0)  # the job's cumulative ε after its second round
        assert ledger.spent("job-a") == 2.0
        ledger.record("job-b", 2.5)
        assert ledger.total_spent() == pytest.approx(4.5)
        assert ledger.can_accept("job-a", 2.5)  # 2.5 + 2.5 = 5.0 ≤ 5
        assert not ledger.can_accept("job-a", 2.6)
        assert not ledger.can_accept("job-c", 0.6)
        with pytest.raises(PrivacyBudgetExceeded, match="declines job 'job-c'"):
            ledger.require("job-c", 0.6)
        with pytest.raises(PrivacyBudgetExceeded):
            ledger.record("job-c", 1.0)
        assert "job-c" not in ledger.jobs()
    with PrivacyLedger(path, limit=5.0) as reopened:
        assert reopened.jobs() == {"job-a": 2.0, "job-b": 2.5}


def test_ledger_never_lowers_a_job_and_rejects_nonsense(tmp_path: Path) -> None:
    with PrivacyLedger(":memory:", limit=10.0) as ledger:
        ledger.record("j", 3.0)
        ledger.record("j", 1.0)  # stale report: ε within a job only grows
        assert ledger.spent("j") == 3.0
        assert not ledger.can_accept("j", float("nan"))
        assert not ledger.can_accept("j", -1.0)
    with pytest.raises(ConfigError, match="limit"):
        PrivacyLedger(tmp_path / "x.sqlite", limit=0.0)
