"""Engines and sessions: the one place that connects to the database."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from recsys.errors import ConfigError
from recsys.settings import get_settings

#: How long a batch job waits for another writer of a SQLite file (requests wait less, see below).
SQLITE_BUSY_SECONDS = 30


def _normalise_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and route them to psycopg 3, the driver we ship."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One pooled engine per URL and process. SQLite files get their folder created."""
    try:
        parsed = make_url(_normalise_url(url))
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse message
        raise ConfigError(f"invalid database URL {url!r}: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_SECONDS})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_timeout = get_settings().database_connect_timeout_seconds
    return create_engine(parsed, pool_pre_ping=True, connect_args={"connect_timeout": connect_timeout})


def source_engine(url: str) -> Engine:
    """An engine reading another database (an ingestion source), separate from recsys's own.

    Nothing is set on the source's connections (no WAL switch, no pragmas); a SQLite file must
    exist and is opened read-only.
    """
    try:
        parsed = make_url(_normalise_url(url))
    except Exception as exc:
        raise ConfigError(f"invalid source URL {url!r}: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "").expanduser()
        if not parsed.database or parsed.database == ":memory:" or not path.is_file():
            raise ConfigError(f"the source URL {url!r} names no existing SQLite file")
        location = f"file:{path.resolve()}?mode=ro"
        return create_engine(
            "sqlite://", creator=lambda: sqlite3.connect(location, uri=True, timeout=SQLITE_BUSY_SECONDS)
        )
    connect_timeout = get_settings().database_connect_timeout_seconds
    return create_engine(parsed, connect_args={"connect_timeout": connect_timeout})


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the service read while an ingest writes; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Staging tables of bulk loads (and other temporary tables) live in memory, not in a file.
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A transaction: committed on success, rolled back on any error."""
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session, session.begin():
        yield session


@contextmanager
def bounded_transaction(engine: Engine, seconds: float) -> Iterator[Connection]:
    """A transaction whose statements give up after ``seconds`` instead of waiting on locks or a
    slow server: ``statement_timeout`` and ``lock_timeout`` on PostgreSQL, the busy timeout on
    SQLite. For work a client waits for; batch jobs keep the engine's defaults."""
    milliseconds = max(1, int(seconds * 1000))
    with engine.begin() as connection:
        if is_postgres(engine):
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {milliseconds}")
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = {milliseconds}")
            yield connection
            return
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {milliseconds}")
        try:
            yield connection
        finally:
            with suppress(Exception):  # the pooled connection goes back with the batch-job default
                connection.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_SECONDS * 1000}")
