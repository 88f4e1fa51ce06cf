"""Schema migrations of the coordinator database: a version table and ordered, idempotent steps.

New *tables* come from :mod:`fedge.coordinator.schema` through ``create_all``; a new *column* on
an existing table (or any other change to one) needs a step here, or a database made by an
earlier release lacks it. :class:`~fedge.coordinator.store.Store` calls :func:`migrate` at
start-up, after ``create_all``:

1. the ``schema_migrations`` table records each applied step (version, description, time);
2. every step not yet recorded runs, in version order, each in its own transaction with its
   record;
3. a database recording a version this code does not know was upgraded by a newer fedge, and is
   refused (:class:`~fedge.errors.ConfigError`) rather than used half-understood.

Steps are idempotent (:class:`AddColumn` adds only a missing column), so a fresh database --
where ``create_all`` already made every column -- and one whose step was interrupted between its
change and its record both come out right. To add a step: append it to :data:`MIGRATIONS` with
the next version number, declare the same column in ``schema.py``, and never edit or reorder a
step that has shipped. ``tests/coordinator/test_migrations.py`` upgrades databases made by
earlier releases on SQLite and PostgreSQL and checks that none of ``schema.py``'s columns is
missing afterwards (:func:`missing_columns`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, inspect, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.sql.elements import TextClause

from fedge.coordinator.schema import Base
from fedge.errors import ConfigError

__all__ = [
    "MIGRATIONS",
    "AddColumn",
    "Migration",
    "applied_versions",
    "migrate",
    "missing_columns",
    "schema_version",
]

log = logging.getLogger(__name__)

_versions_metadata = MetaData()
schema_migrations = Table(
    "schema_migrations",
    _versions_metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", String(200), nullable=False),
    Column("applied_at", Float, nullable=False),
)


@dataclass(frozen=True)
class AddColumn:
    """Add ``column`` to ``table`` unless it is there: ``ALTER TABLE … ADD COLUMN``.

    The column is spelled out here (not taken from ``schema.py``) so the step means the same
    forever. A ``NOT NULL`` column needs a ``server_default`` to fill the rows already there.
    """

    table: str
    column: Column[object]

    def __post_init__(self) -> None:
        if not self.column.nullable and self.column.server_default is None:
            raise ConfigError(
                f"migration adding {self.table}.{self.column.name}: a NOT NULL column needs a"
                " server_default for the rows that already exist"
            )

    def __call__(self, conn: Connection) -> None:
        """Apply the step on ``conn`` (a no-op when the column exists)."""
        inspector = inspect(conn)
        if not inspector.has_table(self.table):
            return  # create_all makes the table with the column
        if self.column.name in {c["name"] for c in inspector.get_columns(self.table)}:
            return
        dialect = conn.dialect
        preparer = dialect.identifier_preparer
        ddl = (
            f"ALTER TABLE {preparer.quote(self.table)} ADD COLUMN"
            f" {preparer.quote(self.column.name)} {self.column.type.compile(dialect=dialect)}"
        )
        default = self.column.server_default
        if default is not None:
            ddl += f" DEFAULT {_default_sql(default.arg)}"  # type: ignore[attr-defined]
        if not self.column.nullable:
            ddl += " NOT NULL"
        conn.exec_driver_sql(ddl)

    def __str__(self) -> str:
        return f"add column {self.table}.{self.column.name}"


def _default_sql(arg: object) -> str:
    """A server default as SQL text for ``conn``'s dialect."""
    if isinstance(arg, TextClause):
        return arg.text
    if isinstance(arg, str):
        return "'" + arg.replace("'", "''") + "'"
    raise ConfigError(f"unsupported server_default {arg!r}: use a string or sqlalchemy.text()")


@dataclass(frozen=True)
class Migration:
    """One numbered schema change: ``apply`` runs inside a transaction and is idempotent."""

    version: int
    description: str
    apply: Callable[[Connection], None]


MIGRATIONS: tuple[Migration, ...] = (
    # Registry status (issue 6), added to model_versions after databases existed (the release
    # before git commit 2447ee7 made none of these two columns).
    Migration(
        1,
        "model_versions.status: the registry status of each model version",
        AddColumn(
            "model_versions",
            Column("status", String(16), nullable=False, server_default="candidate"),
        ),
    ),
    Migration(
        2,
        "model_versions.status_reason: why a version's status last changed",
        AddColumn(
            "model_versions", Column("status_reason", Text, nullable=False, server_default="")
        ),
    ),
    # Federated evaluation (issue 6): each version's evaluation on the devices' own data, added
    # to model_versions after databases existed (the release before it made none of these).
    Migration(
        3,
        "model_versions.federated_accuracy: accuracy on the devices' own data",
        AddColumn("model_versions", Column("federated_accuracy", Float, nullable=True)),
    ),
    Migration(
        4,
        "model_versions.federated_loss: mean loss per example on the devices' own data",
        AddColumn("model_versions", Column("federated_loss", Float, nullable=True)),
    ),
    Migration(
        5,
        "model_versions.federated_examples: examples the federated evaluation covers",
        AddColumn("model_versions", Column("federated_examples", Integer, nullable=True)),
    ),
    Migration(
        6,
        "model_versions.federated_devices: devices the federated evaluation covers",
        AddColumn("model_versions", Column("federated_devices", Integer, nullable=True)),
    ),
    # Rollback restores the version that left production last (issue 6): when each version's
    # status last changed, added to model_versions after databases existed.
    Migration(
        7,
        "model_versions.status_at: when a version's status last changed",
        AddColumn("model_versions", Column("status_at", Float, nullable=True)),
    ),
)


def schema_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """The schema version this code writes: the newest step's number (0 for none)."""
    return max((m.version for m in migrations), default=0)


def applied_versions(engine: Engine) -> list[int]:
    """The step versions recorded in the database, ascending (empty before the first run)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(schema_migrations.name):
            return []
        q = select(schema_migrations.c.version).order_by(schema_migrations.c.version)
        return [int(v) for v in conn.scalars(q)]


def migrate(engine: Engine, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Bring the database up to date; returns the versions applied now (empty: it was current).

    Raises :class:`ConfigError` when the database was migrated by a newer fedge, when the steps
    are not numbered 1, 2, 3, … in order, or when a step fails (nothing of it is recorded).
    """
    _check_numbering(migrations)
    try:
        _versions_metadata.create_all(engine)
        done = set(applied_versions(engine))
    except SQLAlchemyError as exc:
        raise ConfigError(f"cannot read the coordinator database's schema version: {exc}") from None
    known = schema_version(migrations)
    if done and max(done) > known:
        raise ConfigError(
            f"the coordinator database is at schema version {max(done)}, newer than this fedge"
            f" knows ({known}): it was upgraded by a newer release; run that release (or"
            " restore a backup taken before the upgrade)"
        )
    applied: list[int] = []
    for step in migrations:
        if step.version in done:
            continue
        try:
            with engine.begin() as conn:
                step.apply(conn)
                conn.execute(
                    schema_migrations.insert().values(
                        version=step.version, description=step.description, applied_at=time.time()
                    )
                )
        except IntegrityError:  # another coordinator recorded it at the same moment
            continue
        except SQLAlchemyError as exc:
            raise ConfigError(
                f"schema migration {step.version} ({step.description}) failed: {exc}; the"
                " database is left at the previous version -- fix the cause and restart"
            ) from None
        log.info("applied schema migration %d: %s", step.version, step.description)
        applied.append(step.version)
    return applied


def missing_columns(engine: Engine) -> list[str]:
    """``table.column`` of every column ``schema.py`` declares that the database lacks."""
    inspector = inspect(engine)
    missing: list[str] = []
    for table in Base.metadata.sorted_tables:
        if not inspector.has_table(table.name):
            missing.append(f"{table.name}.*")
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        missing += [f"{table.name}.{c.name}" for c in table.columns if c.name not in present]
    return missing


def _check_numbering(migrations: Sequence[Migration]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ConfigError(
            f"schema migrations must be numbered 1, 2, 3, ... in order; got {versions}"
        )
