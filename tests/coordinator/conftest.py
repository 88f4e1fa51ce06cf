"""Fixtures for coordinator tests: stores on SQLite and PostgreSQL, artifact dirs, identities."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fedge.coordinator.store import Store
from fedge.identity import Identity, Role

POSTGRES_ENV = "FEDGE_TEST_POSTGRES_URL"


@dataclass(frozen=True)
class Database:
    """Where a test's database lives: a SQLAlchemy URL and the engine options to reach it."""

    url: str
    engine_options: dict[str, Any] = field(default_factory=dict)

    def store(self) -> Store:
        """A Store on this database (creating or upgrading its schema)."""
        return Store(self.url, engine_options=self.engine_options)


def _postgres_database() -> Iterator[Database]:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        reason = (
            f"{POSTGRES_ENV} is not set: the PostgreSQL leg needs a server "
            "(.ci/run starts one; e.g. postgresql+psycopg://fedge:fedge@127.0.0.1/fedge_test)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"  # one schema per test: no cross-test leftovers
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield Database(url, {"connect_args": {"options": f"-csearch_path={schema}"}})
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database on SQLite and on PostgreSQL (its own schema), before any Store."""
    if request.param == "sqlite":
        yield Database(f"sqlite:///{tmp_path / 'coordinator.db'}")
    else:
        yield from _postgres_database()


@pytest.fixture
def store(database: Database) -> Iterator[Store]:
    """A fresh, empty store on each database."""
    s = database.store()
    yield s
    s.close()


def identity(role: Role, name: str, site: str | None = None) -> Identity:
    """An identity as the transport would hand it to a service after mTLS verification."""
    now = datetime.now(UTC)
    return Identity(role, name, site, 1, now - timedelta(days=1), now + timedelta(days=1))
