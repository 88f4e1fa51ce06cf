"""``fedge audit verify|export``: the coordinator's audit log, read from its database directly.

An auditor checks the log where it is kept, not through the coordinator it audits: give the
coordinator's config (its ``database_url``) or the URL itself. Nothing is written::

    fedge audit verify --config coordinator.toml
    fedge audit verify --database postgresql+psycopg://auditor@db/fedge --anchor 812:9f2c…
    fedge audit export --config coordinator.toml --format csv --out audit.csv
    fedge audit verify --file audit.jsonl          # an export, checked offline

``verify`` exits 0 when the chain is intact and 1 naming the first broken entry (2: it could not
read the log at all).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import click

from fedge.coordinator.audit import AuditLog
from fedge.errors import ConfigError, ValidationError
from fedge.telemetry.audit import AuditEntry, ChainReport, verify_chain

__all__ = ["audit_group", "open_audit_log", "read_export", "write_csv", "write_jsonl"]

CSV_FIELDS = ("seq", "time", "at", "kind", "actor", "subject", "details", "prev_hash", "hash")


@contextmanager
def open_audit_log(config_path: str | None, database_url: str | None) -> Iterator[AuditLog]:
    """The audit log of the database named by ``--config`` or ``--database`` (read only here)."""
    from sqlalchemy import create_engine

    if (config_path is None) == (database_url is None):
        raise ConfigError("give exactly one of --config coordinator.toml and --database URL")
    if config_path is not None:
        from fedge.coordinator.config import load_coordinator_config

        database_url = load_coordinator_config(config_path).resolved_database_url()
    assert database_url is not None
    if database_url.startswith("sqlite:///"):
        path = Path(database_url[len("sqlite:///") :])
        if not path.is_file():
            raise ConfigError(f"no coordinator database at {path}: check --config/--database")
    engine = create_engine(database_url)
    try:
        audit = AuditLog(engine)
        audit.check_present()
        yield audit
    finally:
        engine.dispose()


def _csv_row(e: AuditEntry) -> dict[str, Any]:
    when = dt.datetime.fromtimestamp(e.at, dt.UTC).isoformat()
    row = e.to_dict()
    row.update(time=when, at=repr(e.at), details=json.dumps(row["details"], sort_keys=True))
    return row


def write_jsonl(entries: Iterable[AuditEntry], out: TextIO) -> int:
    """One JSON object an entry (the fields that hash), a line; returns how many."""
    n = 0
    for e in entries:
        out.write(json.dumps(e.to_dict(), sort_keys=True, ensure_ascii=False) + "\n")
        n += 1
    return n


def write_csv(entries: Iterable[AuditEntry], out: TextIO) -> int:
    """CSV with a header; ``details`` as JSON, ``at`` exact, ``time`` as ISO 8601 UTC."""
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    n = 0
    for e in entries:
        writer.writerow(_csv_row(e))
        n += 1
    return n


def read_export(path: Path) -> list[AuditEntry]:
    """The entries of a ``fedge audit export`` file (JSON lines, or CSV by its .csv name)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".csv":
            rows: list[dict[str, Any]] = list(csv.DictReader(io.StringIO(text)))
            for row in rows:
                row["details"] = json.loads(row["details"])
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        entries = [AuditEntry.from_dict(r) for r in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValidationError(f"{path} is not a fedge audit export: {exc!r}") from None
    return sorted(entries, key=lambda e: e.seq)


def _parse_anchor(text: str | None) -> tuple[int, str] | None:
    if text is None:
        return None
    seq, _, digest = text.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise ConfigError(f"--anchor wants SEQ:HASH (a number and 64 hex digits), not {text!r}")
    return int(seq), digest.lower()


def _source_options(func: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--config",
                "config_path",
                type=click.Path(dir_okay=False, exists=True),
                help="The coordinator's coordinator.toml (its database_url is read).",
            ),
            click.option(
                "--database",
                "database_url",
                default=None,
                envvar="FEDGE_AUDIT_DATABASE",
                help="SQLAlchemy URL of the coordinator's database (SQLite file, PostgreSQL).",
            ),
        ]
    ):
        func = option(func)
    return func


@click.group("audit")
def audit_group() -> None:
    """The coordinator's hash-chained audit log: verify it, export it (reads the database)."""


def _say(report: ChainReport) -> None:
    head = f"head #{report.head_seq} {report.head_hash}"
    if report.broken is None:
        click.echo(f"audit log intact: {report.entries} entries, {head}")
        click.echo(f"keep the head to check against later: --anchor {report.head_seq}:"
                   f"{report.head_hash}")  # fmt: skip
        return
    click.secho(f"audit log BROKEN at {report.broken}", fg="red", err=True)
    click.echo(f"{report.entries} entries read, {head}", err=True)


@audit_group.command("verify")
@_source_options
@click.option(
    "--file",
    "export_file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Verify an export (JSON lines or .csv) instead of a database.",
)
@click.option("--anchor", default=None, help="SEQ:HASH of an entry noted earlier to check against.")
def audit_verify(
    config_path: str | None, database_url: str | None, export_file: str | None, anchor: str | None
) -> None:
    """Check every entry against its hash and its predecessor; exit 1 at the first broken one.

    Detects edited, deleted, reordered and inserted entries. A log rewritten from some entry to
    its end (hashes and head included) needs --anchor: a head printed by an earlier run.
    """
    mark = _parse_anchor(anchor)
    if export_file is not None:
        if config_path or database_url:
            raise ConfigError("give --file or a database (--config/--database), not both")
        report = verify_chain(read_export(Path(export_file)), None, mark)
    else:
        with open_audit_log(config_path, database_url) as audit:
            report = audit.verify(mark)
    _say(report)
    if not report.intact:
        sys.exit(1)


@audit_group.command("export")
@_source_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="JSON lines (verifiable with `verify --file`) or CSV (details as JSON).",
)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="File (default stdout).")
@click.option("--after", type=int, default=0, show_default=True, help="Only entries after SEQ.")
@click.option("--kind", "kinds", multiple=True, help="Only these kinds (repeatable), e.g. round.")
def audit_export(
    config_path: str | None,
    database_url: str | None,
    fmt: str,
    out: str | None,
    after: int,
    kinds: tuple[str, ...],
) -> None:
    """Write the log's entries with their hashes, in sequence order."""
    with open_audit_log(config_path, database_url) as audit:
        entries = audit.entries(after=after, kinds=kinds or None)
    write = write_csv if fmt == "csv" else write_jsonl
    if out is None:
        write(entries, sys.stdout)
        return
    with open(out, "w", encoding="utf-8", newline="") as handle:
        n = write(entries, handle)
    click.echo(f"wrote {n} entries to {out}", err=True)
