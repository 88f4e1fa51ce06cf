"""``fedge audit verify|export`` on a real coordinator database (SQLite file), via the CLI."""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from fedge.cli.main import cli
from fedge.coordinator.audit import AuditLog
from fedge.coordinator.store import Store
from fedge.errors import FedgeError


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A coordinator database holding five audit entries."""
    path = tmp_path / "coordinator.db"
    store = Store(f"sqlite:///{path}")
    audit = AuditLog(store.engine)
    for i in range(1, 6):
        audit.append("round", "coordinator", f"job/{i}", {"devices": [f"d{i}"], "round": i})
    store.close()
    return path


def run(*args: str) -> tuple[int, str, str]:
    """Exit code, stdout, stderr; a fedge error counts as `fedge`'s main() shows it (2, message)."""
    result = CliRunner().invoke(cli, list(args))
    if isinstance(result.exception, FedgeError):
        return 2, result.stdout, str(result.exception)
    return result.exit_code, result.stdout, result.stderr


def test_verify_an_intact_log_by_config_and_by_url(db: Path, tmp_path: Path) -> None:
    config = tmp_path / "coordinator.toml"
    config.write_text('database_url = "sqlite:///coordinator.db"\n')
    code, out, _ = run("audit", "verify", "--config", str(config))
    assert code == 0 and "intact: 5 entries, head #5" in out
    code, out, _ = run("audit", "verify", "--database", f"sqlite:///{db}")
    assert code == 0 and "--anchor 5:" in out


def test_verify_names_the_first_broken_entry(db: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_log WHERE seq = 2"))
        conn.execute(sa.text("UPDATE audit_log SET subject = 'job/x' WHERE seq = 4"))
    engine.dispose()
    code, _, err = run("audit", "verify", "--database", f"sqlite:///{db}")
    assert code == 1
    assert "BROKEN at entry #2 deleted" in err


def test_anchor_from_an_earlier_run(db: Path) -> None:
    url = f"sqlite:///{db}"
    _, out, _ = run("audit", "verify", "--database", url)
    anchor = out.split("--anchor ")[1].strip()
    assert run("audit", "verify", "--database", url, "--anchor", anchor)[0] == 0
    wrong = anchor[:-4] + "0000"
    code, _, err = run("audit", "verify", "--database", url, "--anchor", wrong)
    assert code == 1 and "is not the anchor's" in err
    code, _, err = run("audit", "verify", "--database", url, "--anchor", "5")
    assert code == 2 and "SEQ:HASH" in err


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_and_verify_the_export(db: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"audit.{fmt}"
    code, _, err = run("audit", "export", "--database", f"sqlite:///{db}", "--format", fmt,
                       "--out", str(out))  # fmt: skip
    assert code == 0 and "wrote 5 entries" in err
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    else:
        rows = list(csv.DictReader(out.open()))
        when = dt.datetime.fromisoformat(rows[0]["time"])  # ISO 8601 beside the exact time
        assert when.timestamp() == pytest.approx(float(rows[0]["at"]))
        for row in rows:
            row["details"] = json.loads(row["details"])
    assert [int(r["seq"]) for r in rows] == [1, 2, 3, 4, 5]
    assert rows[2]["details"] == {"devices": ["d3"], "round": 3}
    assert run("audit", "verify", "--file", str(out))[0] == 0
    quoted = '"d3"' if fmt == "jsonl" else '""d3""'  # the device id, not a hash's hex digits
    out.write_text(out.read_text().replace(quoted, quoted.replace("d3", "zz")))
    code, _, err = run("audit", "verify", "--file", str(out))
    assert code == 1 and "entry #3 edited" in err


def test_export_filters_by_kind_and_seq(db: Path) -> None:
    url = f"sqlite:///{db}"
    _, out, _ = run("audit", "export", "--database", url, "--after", "3")
    assert [json.loads(x)["seq"] for x in out.splitlines()] == [4, 5]
    _, out, _ = run("audit", "export", "--database", url, "--kind", "release")
    assert out == ""


def test_clear_errors(tmp_path: Path) -> None:
    code, _, err = run("audit", "verify", "--database", f"sqlite:///{tmp_path / 'none.db'}")
    assert code == 2 and "no coordinator database" in err
    code, _, err = run("audit", "verify")
    assert code == 2 and "exactly one of --config" in err
    other = tmp_path / "other.db"
    sa.create_engine(f"sqlite:///{other}").connect().close()
    other.touch()
    code, _, err = run("audit", "export", "--database", f"sqlite:///{other}")
    assert code == 2 and "has no audit log" in err
