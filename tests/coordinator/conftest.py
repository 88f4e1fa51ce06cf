"""Fixtures for coordinator tests: stores on SQLite and PostgreSQL, artifact dirs, identities."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fedge.coordinator.store import Store
from fedge.identity import Identity, Role

POSTGRES_ENV = "FEDGE_TEST_POSTGRES_URL"


def _postgres_store() -> Iterator[Store]:
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
    store = Store(url, engine_options={"connect_args": {"options": f"-csearch_path={schema}"}})
    try:
        yield store
    finally:
        store.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, empty store on each database."""
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'coordinator.db'}")
        yield s
        s.close()
    else:
        yield from _postgres_store()


def identity(role: Role, name: str, site: str | None = None) -> Identity:
    """An identity as the transport would hand it to a service after mTLS verification."""
    now = datetime.now(UTC)
    return Identity(role, name, site, 1, now - timedelta(days=1), now + timedelta(days=1))
