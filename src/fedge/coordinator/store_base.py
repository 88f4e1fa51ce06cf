"""The engine under :class:`~fedge.coordinator.store.Store`: schema, migrations, transactions."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from fedge.coordinator.migrations import migrate, missing_columns
from fedge.coordinator.schema import Base
from fedge.errors import ConfigError

__all__ = ["StoreBase"]


class StoreBase:
    """One SQLAlchemy engine (schema created and migrated) and a transaction per call."""

    def __init__(self, url: str, *, engine_options: Mapping[str, Any] | None = None) -> None:
        options = dict(engine_options or {})
        if url.startswith("sqlite"):
            options.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        self.url = url
        self.engine: Engine = create_engine(url, **options)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise ConfigError(f"cannot open the coordinator database {url!r}: {exc}") from None
        migrate(self.engine)  # columns added since the database was made (migrations.py)
        missing = missing_columns(self.engine)
        if missing:
            raise ConfigError(
                f"the coordinator database {url!r} lacks {', '.join(missing)}: schema.py declares"
                " them but no step in fedge.coordinator.migrations adds them"
            )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
