"""Audit log cost (issue 7 item 4): a chained, serialised append against a plain insert.

For each database (a SQLite file; PostgreSQL when ``FEDGE_TEST_POSTGRES_URL`` is set), in the same
run:

1. baseline: one plain INSERT of the same row (same columns, no lock, no hash, no head) per
   transaction, sequentially;
2. ``AuditLog.append``: lock the head row, hash, insert, move the head, one transaction each;
3. the same appends from 4 threads at once (each its own connection): entries per second, and
   whether the result is still one chain;
4. a round entry naming 1,000 devices (``record_round``), as a large fleet's round writes;
5. ``AuditLog.verify`` over everything written: entries per second.

    python benchmarks/bench_audit.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, table

from fedge.coordinator.audit import AuditLog
from fedge.coordinator.schema import ParticipantRow
from fedge.coordinator.store import Store

DETAILS = {"job": "bench", "round": 1, "devices": ["dev-0001", "dev-0002", "dev-0003"]}


def _plain_inserts(engine: sa.Engine, n: int) -> float:
    meta = sa.MetaData()
    plain = sa.Table(
        "plain_log",
        meta,
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("at", sa.Float),
        sa.Column("kind", sa.String(32)),
        sa.Column("actor", sa.String(64)),
        sa.Column("subject", sa.String(160)),
        sa.Column("details", sa.JSON),
        sa.Column("prev_hash", sa.String(64)),
        sa.Column("hash", sa.String(64)),
    )
    meta.create_all(engine)
    start = time.perf_counter()
    for i in range(1, n + 1):
        with engine.begin() as conn:
            conn.execute(
                plain.insert().values(
                    seq=i, at=time.time(), kind="round", actor="coordinator", subject=f"b/{i}",
                    details=DETAILS, prev_hash=f"{i:064x}", hash=f"{i + 1:064x}",
                )
            )  # fmt: skip
    return time.perf_counter() - start


def _appends(audit: AuditLog, n: int, tag: str = "") -> float:
    start = time.perf_counter()
    for i in range(n):
        audit.append("round", "coordinator", f"b{tag}/{i}", DETAILS)
    return time.perf_counter() - start


def _concurrent(store: Store, writers: int, each: int) -> float:
    threads = [
        threading.Thread(target=_appends, args=(AuditLog(store.engine), each, f"w{w}"))
        for w in range(writers)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


def _big_round(store: Store, devices: int) -> float:
    with store.engine.begin() as conn:
        conn.execute(
            sa.insert(ParticipantRow),
            [
                {"job_id": "bench", "round": 7, "device_id": f"dev-{i:05d}",
                 "gateway_id": f"gw-{i % 10}", "received_at": 0.0}
                for i in range(devices)
            ],
        )  # fmt: skip
    audit = AuditLog(store.engine)
    audit.record_round("bench", 7, "committed", model_sha256="0" * 64)  # enrols them, once
    start = time.perf_counter()
    audit.record_round("bench", 7, "committed", model_sha256="1" * 64)
    return time.perf_counter() - start


def run(name: str, url: str, n: int, **engine_options: Any) -> dict[str, Any]:
    """All measurements on one database."""
    store = Store(url, engine_options=engine_options)
    try:
        audit = AuditLog(store.engine)
        plain_s = _plain_inserts(store.engine, n)
        chained_s = _appends(audit, n)
        writers, each = 4, n // 4
        concurrent_s = _concurrent(store, writers, each)
        round_s = _big_round(store, 1000)
        start = time.perf_counter()
        report = audit.verify()
        verify_s = time.perf_counter() - start
    finally:
        store.close()
    return {
        "database": name,
        "appends": n,
        "plain_insert_ms": 1e3 * plain_s / n,
        "append_ms": 1e3 * chained_s / n,
        "append_vs_plain": chained_s / plain_s,
        "concurrent_writers": writers,
        "concurrent_appends_per_s": writers * each / concurrent_s,
        "round_1000_devices_ms": 1e3 * round_s,
        "verified_entries": report.entries,
        "verify_entries_per_s": report.entries / verify_s,
        "intact": report.intact,
    }


def main() -> None:
    """Run on SQLite (and PostgreSQL when configured); print a table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 appends instead of 1,000.")
    args = parser.parse_args()
    n = 200 if args.quick else 1000
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(run("sqlite", f"sqlite:///{Path(tmp) / 'coordinator.db'}", n))
    pg = os.environ.get("FEDGE_TEST_POSTGRES_URL")
    if pg:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(pg)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        try:
            options = {"connect_args": {"options": f"-csearch_path={schema}"}}
            results.append(run("postgresql", pg, n, **options))
        finally:
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    rows = [
        [
            r["database"],
            f"{r['plain_insert_ms']:.2f}",
            f"{r['append_ms']:.2f}",
            f"{r['append_vs_plain']:.2f}x",
            f"{r['concurrent_appends_per_s']:.0f}",
            f"{r['round_1000_devices_ms']:.1f}",
            f"{r['verify_entries_per_s']:.0f}",
            "yes" if r["intact"] else "NO",
        ]
        for r in results
    ]
    headers = ["database", "plain insert ms", "append ms", "vs plain", "4 writers /s",
               "1000-device round ms", "verify /s", "one chain"]  # fmt: skip
    print(table(headers, rows))
    out = RESULTS / "audit.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
