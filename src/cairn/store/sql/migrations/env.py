"""Alembic environment: runs the migrations on the connection cairn hands in.

``cairn.store.sql.schema.upgrade`` passes an open connection (already inside a locked
transaction) as ``config.attributes["connection"]``. Run standalone (e.g. ``alembic
revision --autogenerate`` during development), it connects to ``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from cairn.store.sql.engine import create_store_engine
from cairn.store.sql.orm import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_store_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("cairn migrations run online only (cairn db upgrade)")
run_migrations_online()
