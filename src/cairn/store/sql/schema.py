"""Schema versions of the metadata database.

The schema is owned by the Alembic migrations in ``migrations/versions``. Opening a store
checks the version with a plain ``SELECT`` on ``alembic_version`` (importing Alembic
costs startup time every ``cairn run`` would pay); Alembic is imported only to create or
upgrade a database.

- an empty database is brought to :data:`HEAD_REVISION` when the store opens. A new
  SQLite database (the embedded default, made by the first command of every new project)
  is created from the models and stamped, without importing Alembic, which with its
  template engine costs about half a second; a test checks that this gives the same
  schema as running every migration. PostgreSQL databases always run the migrations;
- a database at an older known revision is refused, naming ``cairn db upgrade``;
- a database at a revision this cairn does not know was written by a newer cairn.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import SQLAlchemyError

from cairn.errors import SchemaError
from cairn.store.sql.engine import create_store_engine, display_url, write_options
from cairn.store.sql.orm import CAIRN_TABLES, metadata
from cairn.store.sql.revisions import HEAD_REVISION, KNOWN_REVISIONS
from cairn.store.sql.translate import translate_error

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


UPGRADE_HINT = "run `cairn db upgrade` to migrate it (back up .cairn/cairn.db first)"
NEWER_HINT = (
    "upgrade cairn (pip install -U cairn) to the version that wrote this database, "
    "or point cairn at another database"
)

# Any constant will do: all cairn processes agree on it to serialize migrations.
_PG_MIGRATION_LOCK = 0x63616972  # "cair"


def current_revision(engine: Engine) -> str | None:
    """The schema revision recorded in the database, or ``None`` if it has none."""
    with engine.connect() as conn:
        return _read_revision(conn)


def _read_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return rows[0] if rows else None


def is_empty(engine: Engine) -> bool:
    """Whether the database holds neither a schema version nor any cairn table."""
    with engine.connect() as conn:
        return _is_empty(conn)


def _is_empty(conn: Connection) -> bool:
    names = set(inspect(conn).get_table_names())
    return "alembic_version" not in names and not (names & CAIRN_TABLES)


def check_schema(engine: Engine) -> None:
    """Raise ``SchemaError`` unless the database is at :data:`HEAD_REVISION`."""
    with engine.connect() as conn:
        revision = _read_revision(conn)
        if revision == HEAD_REVISION:
            return
        _refuse(conn, revision, display_url(engine.url))


def _refuse(conn: Connection, revision: str | None, where: str) -> NoReturn:
    """Raise the ``SchemaError`` that explains why cairn cannot use a database at
    ``revision``: none yet, foreign tables, a newer cairn's schema, or an older one."""
    if revision is None:
        if _is_empty(conn):
            raise SchemaError(
                f"the database at {where} has no cairn schema yet",
                hint="open it with cairn once, or run `cairn db upgrade`",
            )
        raise SchemaError(
            f"the database at {where} has tables but no cairn schema version",
            hint="point cairn at an empty database or at one created by cairn",
        )
    if revision not in KNOWN_REVISIONS:
        raise SchemaError(
            f"the database at {where} is at schema revision {revision}, which this cairn "
            f"(schema {HEAD_REVISION}) does not know: it was written by a newer version of "
            "cairn",
            hint=NEWER_HINT,
        )
    raise SchemaError(
        f"database schema is at {revision}, this cairn needs {HEAD_REVISION}",
        hint=UPGRADE_HINT,
    )


def _create_from_models(conn: Connection) -> None:
    """Create every table and index of the models and record :data:`HEAD_REVISION`, as
    Alembic's own version table would hold it."""
    metadata.create_all(conn)
    conn.execute(
        text(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
    )
    conn.execute(
        text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": HEAD_REVISION}
    )


def alembic_config(url: str | URL) -> Config:
    """An Alembic configuration for the migrations shipped in this package (no ini file)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if isinstance(url, URL):
        url = url.render_as_string(hide_password=False)
    # ConfigParser treats % as interpolation; URL-escaped passwords contain it.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(
    url: str | URL,
    revision: str = "head",
    *,
    engine: Engine | None = None,
    replay: bool = False,
) -> None:
    """Migrate the database at ``url`` to ``revision`` (default: the newest).

    A new SQLite database going to the newest revision is created from the models unless
    ``replay`` asks for every migration to run.

    Concurrent callers are serialized (SQLite: the write lock; PostgreSQL: an advisory
    lock) and the version is read inside the lock, so two processes opening a brand-new
    database never both create the tables. ``engine`` reuses an open engine for ``url``
    (needed for in-memory SQLite, where a second engine would see another database).
    """
    own_engine = engine is None
    if engine is None:
        engine = create_store_engine(url)
    where = display_url(engine.url)
    try:
        with engine.connect().execution_options(**write_options()) as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
            found = _read_revision(conn)
            if found not in KNOWN_REVISIONS and not (found is None and _is_empty(conn)):
                _refuse(conn, found, where)  # a newer cairn's schema, or foreign tables
            to_head = revision in ("head", HEAD_REVISION)
            if found is None and to_head and conn.dialect.name == "sqlite" and not replay:
                log.info("creating the cairn schema %s at %s", HEAD_REVISION, where)
                _create_from_models(conn)
            elif found != HEAD_REVISION or not to_head:
                from alembic import command

                log.info("migrating the cairn schema at %s from %s to %s", where, found, revision)
                config = alembic_config(engine.url)
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
    except SQLAlchemyError as exc:
        raise translate_error(exc, dialect=engine.dialect.name, where=where) from exc
    finally:
        if own_engine:
            engine.dispose()
