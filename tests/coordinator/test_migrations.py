"""Schema migrations on SQLite and PostgreSQL: databases made by earlier releases upgrade in place.

``legacy_schemas/<commit>.sql`` is the DDL that fedge at that commit ran (SQLAlchemy's
``CREATE TABLE`` for each table): d8e2cc6 is the release before the federated-evaluation
columns, ff92fe4 an earlier one, 7afe209 the one before the registry's status columns.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Column, String
from tests.coordinator.conftest import Database

from fedge.aggregation.evaluation import EvaluationSums
from fedge.coordinator.migrations import (
    MIGRATIONS,
    AddColumn,
    Migration,
    applied_versions,
    migrate,
    missing_columns,
    schema_version,
)
from fedge.coordinator.schema import CheckpointRow, ModelVersionRow
from fedge.coordinator.store import Store
from fedge.errors import ConfigError

LEGACY = Path(__file__).parent / "legacy_schemas"
SHA = "ab" * 32
SHA2 = "cd" * 32
ALL_VERSIONS = [m.version for m in MIGRATIONS]


def _engine(db: Database) -> sa.Engine:
    return sa.create_engine(db.url, **db.engine_options)


def _make_legacy(db: Database, commit: str) -> None:
    """Create the tables ``commit`` made, with a job, a round and two model versions in them."""
    lines = (LEGACY / f"{commit}.sql").read_text().splitlines()
    ddl = "\n".join(x for x in lines if not x.startswith("--"))
    if db.url.startswith("sqlite"):
        ddl = ddl.replace(" SERIAL ", " INTEGER ")
    engine = _engine(db)
    with engine.begin() as conn:
        for statement in filter(None, (s.strip() for s in ddl.split(";"))):
            conn.exec_driver_sql(statement)
        conn.exec_driver_sql(
            "INSERT INTO jobs (id, spec, state, committed_rounds, model_sha256, fleet_size,"
            " created_at, reason) VALUES ('job1', '{\"task\": \"digits_mlp\"}', 'running', 1,"
            f" '{SHA2}', 8, 10.0, '')"
        )
        conn.exec_driver_sql(
            "INSERT INTO rounds (job_id, number, state, base_sha256, model_sha256, quotas,"
            " participants, gateways_reported, accuracy, reason) VALUES ('job1', 1, 'committed',"
            f" '{SHA}', '{SHA2}', '{{\"gw-a\": 3}}', 3, 1, 0.9, '')"
        )
        status = ", status, status_reason" if commit != "7afe209" else ""
        for sha, rnd, parent, extra in (
            (SHA, "NULL", "NULL", "'production', 'first'"),
            (SHA2, "1", f"'{SHA}'", "'candidate', 'held'"),
        ):
            values = f", {extra}" if status else ""
            conn.exec_driver_sql(
                "INSERT INTO model_versions (sha256, job_id, round, parent_sha256, size, metrics,"
                f" created_at{status}) VALUES ('{sha}', 'job1', {rnd}, {parent}, 100,"
                f" '{{\"accuracy\": 0.9}}', {11.0 if sha == SHA2 else 10.0}{values})"
            )
    engine.dispose()


@pytest.mark.parametrize("commit", ["d8e2cc6", "ff92fe4", "7afe209"])
def test_a_database_of_an_earlier_release_upgrades_in_place_and_keeps_its_data(
    database: Database, commit: str
) -> None:
    _make_legacy(database, commit)
    store = database.store()
    try:
        assert missing_columns(store.engine) == []
        assert applied_versions(store.engine) == ALL_VERSIONS
        job = store.get_job("job1")
        assert (job.committed_rounds, job.model_sha256, job.spec) == (
            1,
            SHA2,
            {"task": "digits_mlp"},
        )
        rnd = store.get_round("job1", 1)
        assert rnd is not None and (rnd.quotas, rnd.accuracy) == ({"gw-a": 3}, 0.9)
        versions = store.list_model_versions("job1")
        assert [v.sha256 for v in versions] == [SHA, SHA2]
        assert [v.metrics for v in versions] == [{"accuracy": 0.9}] * 2
        if commit == "7afe209":  # the status columns are new: every version starts a candidate
            assert [(v.status, v.status_reason) for v in versions] == [("candidate", "")] * 2
            store.promote_version(SHA, "promoted after the upgrade")
        else:
            assert [(v.status, v.status_reason) for v in versions] == [
                ("production", "first"),
                ("candidate", "held"),
            ]
        store.promote_version(SHA2, "better")  # the new columns are writable
        assert [v.status for v in store.list_model_versions("job1")] == ["retired", "production"]
        # the federated-evaluation columns are new for every one of them: empty, then writable
        assert [(v.federated_accuracy, v.federated_devices) for v in versions] == [(None, None)] * 2
        _commit_round_evaluating(store, SHA2, EvaluationSums(40, 30.0, 12.0, 3))
        evaluated = store.get_model_version(SHA2)
        assert evaluated is not None
        assert (evaluated.federated_accuracy, evaluated.federated_loss) == (0.75, 0.3)
        assert (evaluated.federated_examples, evaluated.federated_devices) == (40, 3)
    finally:
        store.close()
    again = database.store()  # start-up again: nothing left to do, data unchanged
    try:
        assert migrate(again.engine) == []
        assert applied_versions(again.engine) == ALL_VERSIONS
        statuses = [v.status for v in again.list_model_versions("job1")]
        assert statuses == ["retired", "production", "candidate"]  # round 2's is a candidate
        assert again.get_model_version(SHA2).federated_examples == 40  # type: ignore[union-attr]
    finally:
        again.close()


def _commit_round_evaluating(store: Store, base: str, sums: EvaluationSums) -> None:
    """Commit round 2 of job1 from ``base``, its devices having evaluated ``base`` as ``sums``."""
    store.add_round("job1", 2, base, "aggregating")
    new = "ef" * 32
    store.commit_round(
        "job1",
        2,
        ModelVersionRow(
            sha256=new, job_id="job1", round=2, parent_sha256=base, size=100, created_at=12.0
        ),
        CheckpointRow(
            job_id="job1",
            step=2,
            round=2,
            params_sha256=new,
            opt_state_sha256=new,
            created_at=12.0,
        ),
        evaluated=(base, sums),
    )


def test_a_fresh_database_records_every_step_as_applied(database: Database) -> None:
    store = database.store()
    try:
        assert applied_versions(store.engine) == ALL_VERSIONS
        assert schema_version() == ALL_VERSIONS[-1]
        assert missing_columns(store.engine) == []
        assert migrate(store.engine) == []
    finally:
        store.close()


def test_a_step_interrupted_before_its_record_runs_again_harmlessly(database: Database) -> None:
    store = database.store()
    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM schema_migrations WHERE version = 1")
        assert migrate(store.engine) == [1]  # the column is there: the step only records itself
        assert applied_versions(store.engine) == ALL_VERSIONS
    finally:
        store.close()


def test_a_database_migrated_by_a_newer_release_is_refused(database: Database) -> None:
    database.store().close()
    engine = _engine(database)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO schema_migrations (version, description, applied_at)"
            " VALUES (999, 'from the future', 1.0)"
        )
    engine.dispose()
    with pytest.raises(ConfigError, match="newer than this fedge knows"):
        database.store()


def test_a_failing_step_is_not_recorded_and_the_earlier_ones_are(database: Database) -> None:
    engine = _engine(database)
    try:

        def broken(conn: sa.Connection) -> None:
            conn.exec_driver_sql("ALTER TABLE no_such_table ADD COLUMN x INTEGER")

        steps = (
            Migration(1, "a table", lambda c: c.exec_driver_sql("CREATE TABLE t1 (a INTEGER)")),
            Migration(2, "a column", AddColumn("t1", Column("b", String(8), nullable=True))),
            Migration(3, "broken", broken),
        )
        with pytest.raises(ConfigError, match=r"schema migration 3 \(broken\) failed"):
            migrate(engine, steps)
        assert applied_versions(engine) == [1, 2]
        cols = {c["name"] for c in sa.inspect(engine).get_columns("t1")}
        assert cols == {"a", "b"}
    finally:
        engine.dispose()


def test_steps_must_be_numbered_in_order_and_new_not_null_columns_need_a_default() -> None:
    step = Migration(2, "x", lambda c: None)
    with pytest.raises(ConfigError, match="numbered 1, 2, 3"):
        migrate(sa.create_engine("sqlite://"), (step,))
    with pytest.raises(ConfigError, match="needs a server_default"):
        AddColumn("jobs", Column("x", String(8), nullable=False))
