"""Creating SQLAlchemy engines for the metadata store: URL rules and SQLite settings.

SQLite (the embedded default) runs in WAL mode so readers never wait for the writer, with
a long busy timeout so concurrent cairn processes queue for the write lock instead of
failing, foreign keys on and ``synchronous=NORMAL`` (durable at each checkpoint, fast).
SQLAlchemy takes over ``BEGIN`` from the sqlite3 driver so that a transaction can ask for
the write lock up front (``BEGIN IMMEDIATE``, see :func:`write_options`): a transaction
that reads and then writes would otherwise fail at its first write when another process
wrote in between.

``postgresql://`` URLs use the psycopg (3) driver.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import StaticPool

from cairn.errors import ConfigError, StoreNotWritableError

SQLITE_BUSY_TIMEOUT_MS = 60_000

_BEGIN_OPTION = "cairn_sqlite_begin"

NOT_WRITABLE_HINT = "check the folder's permissions, or set CAIRN_DATA_DIR to a writable folder"


def normalize_url(url: str | URL) -> URL:
    """Parse a store URL, choosing the psycopg driver for plain ``postgresql://``."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError with a terse text
        raise ConfigError(
            f"not a database URL: {url!s}",
            hint="use sqlite:///path/to/cairn.db or postgresql://user@host/dbname",
        ) from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"unsupported metadata store URL scheme {parsed.drivername!r}",
            hint="use sqlite:///path/to/cairn.db or postgresql://user@host/dbname",
        )
    return parsed


def display_url(url: URL) -> str:
    """The URL with any password masked, for messages."""
    return url.render_as_string(hide_password=True)


def sqlite_path(url: URL) -> Path | None:
    """The database file of a SQLite URL, or ``None`` for an in-memory database."""
    database = url.database
    if database and database.startswith("file:"):  # an SQLite URI filename (uri=true)
        if url.query.get("mode") == "memory":
            return None
        database = database[len("file:") :].split("?", 1)[0]
    if not database or database == ":memory:":
        return None
    return Path(database)


def ensure_sqlite_folder(path: Path) -> None:
    """Create the database's folder; raise ``StoreNotWritableError`` if that cannot work."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreNotWritableError(
            f"cannot write the cairn store at {path}: {exc.strerror or exc}",
            hint=NOT_WRITABLE_HINT,
        ) from exc
    target = path if path.exists() else folder
    if not os.access(target, os.W_OK):
        raise StoreNotWritableError(
            f"cannot write the cairn store at {path}: permission denied",
            hint=NOT_WRITABLE_HINT,
        )


def create_store_engine(url: str | URL) -> Engine:
    """An engine for ``url`` with cairn's connection settings applied."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    return create_engine(parsed, pool_pre_ping=True)


def write_options() -> dict[str, Any]:
    """Execution options for a transaction that will write.

    On SQLite the transaction starts with ``BEGIN IMMEDIATE`` (takes the write lock now,
    waiting up to the busy timeout); other backends ignore the option.
    """
    return {_BEGIN_OPTION: "IMMEDIATE"}


def _sqlite_engine(url: URL) -> Engine:
    path = sqlite_path(url)
    connect_args: dict[str, Any] = {
        "check_same_thread": False,
        "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
    }
    if path is None:
        # One shared connection, so every user of the engine sees the same memory database.
        engine = create_engine(url, connect_args=connect_args, poolclass=StaticPool)
    else:
        ensure_sqlite_folder(path)
        engine = create_engine(url, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand BEGIN to SQLAlchemy (see _on_begin); the driver's own implicit BEGIN
        # would be DEFERRED and skip SELECTs.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            if path is not None:
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine
