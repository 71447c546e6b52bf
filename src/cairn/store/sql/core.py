"""What every part of the SQL store shares: transactions, upserts, error translation, and
turning execution and datum rows into entities.

``SqlMetadataStore`` is assembled from one class per aggregate (executions and metrics in
:mod:`.store`, datums and aliases in :mod:`.datums`, dataset versions in :mod:`.datasets`,
lineage and gc queries in :mod:`.lineage`), each deriving from :class:`SqlStoreCore`.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Engine, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Row

from cairn.entities import Datum, Execution, InputFile
from cairn.errors import NotFoundError
from cairn.store.sql import convert
from cairn.store.sql.orm import (
    datum_tags,
    execution_inputs,
    execution_tags,
    executions,
    metadata_latest,
    metric_latest,
)
from cairn.store.sql.translate import translate_error

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

MIN_PREFIX = 4
"""Shortest id prefix accepted for executions and datums."""

CHUNK = 500  # ids per IN (...) list: well under every backend's bound-parameter limit


def translated(method: F) -> F:
    """Turn SQLAlchemy/driver exceptions raised by ``method`` into cairn errors."""

    @functools.wraps(method)
    def wrapper(self: SqlStoreCore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sa_exc.SQLAlchemyError as exc:
            raise translate_error(exc, dialect=self.dialect, where=self._where) from exc

    return cast(F, wrapper)


def now() -> datetime:
    return datetime.now(UTC)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def no_execution(execution_id: str) -> NotFoundError:
    return NotFoundError(
        f"no execution with id {execution_id!r}",
        hint="`cairn ls` lists the executions",
    )


class SqlStoreCore:
    """Plumbing shared by the parts of ``SqlMetadataStore`` (which sets the attributes)."""

    engine: Engine
    dialect: str
    _writer: Engine
    _where: str

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A transaction holding the write lock from its start (SQLite: BEGIN IMMEDIATE)."""
        with self._writer.connect() as conn, conn.begin():
            yield conn

    def _require_execution(
        self,
        conn: Connection,
        execution_id: str,
        *,
        lock: bool = False,
        project_id: str | None = None,
    ) -> None:
        """Raise ``NotFoundError`` unless the execution exists (in ``project_id``, if given)."""
        query = select(executions.c.id).where(executions.c.id == execution_id)
        if project_id is not None:
            query = query.where(executions.c.project_id == project_id)
        if lock and self.dialect == "postgresql":
            # Serializes writers of one execution's metrics (seq numbers) on PostgreSQL;
            # on SQLite the write transaction already does.
            query = query.with_for_update()
        if conn.execute(query).first() is None:
            raise no_execution(execution_id)

    def _upsert(
        self,
        conn: Connection,
        table: Any,
        rows: list[dict[str, Any]],
        keys: Sequence[str],
        update_columns: Sequence[str] = (),
    ) -> None:
        """Insert ``rows``; on a key conflict update ``update_columns`` (or do nothing)."""
        if not rows:
            return
        # Imported here: loading the PostgreSQL dialect costs SQLite users startup time.
        stmt: Any
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            stmt = postgresql.insert(table)
        else:
            from sqlalchemy.dialects import sqlite

            stmt = sqlite.insert(table)
        if update_columns:
            stmt = stmt.on_conflict_do_update(
                index_elements=list(keys),
                set_={name: stmt.excluded[name] for name in update_columns},
            )
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
        conn.execute(stmt, rows)

    def _insert_if_absent(
        self, conn: Connection, table: Any, row: dict[str, Any], keys: Sequence[str]
    ) -> bool:
        """Insert ``row`` in a write transaction unless its key exists; whether it did.

        SQLite: the write lock is held, so a caller that has just seen no such row can
        simply insert. PostgreSQL: a concurrent transaction may have inserted the key
        meanwhile; ``ON CONFLICT DO NOTHING`` then waits for it and inserts nothing.
        """
        if self.dialect != "postgresql":
            conn.execute(insert(table).values(**row))
            return True
        from sqlalchemy.dialects import postgresql

        stmt = (
            postgresql.insert(table)
            .values(**row)
            .on_conflict_do_nothing(index_elements=list(keys))
            .returning(*(table.c[key] for key in keys))
        )
        return conn.execute(stmt).first() is not None

    def _hydrate(self, conn: Connection, rows: Sequence[Row[Any]]) -> list[Execution]:
        """Entities for execution ``rows`` with their inputs, tags and latest metrics."""
        ids = [row.id for row in rows]
        inputs: dict[str, list[InputFile]] = defaultdict(list)
        tags: dict[str, list[str]] = defaultdict(list)
        metrics: dict[str, dict[str, Any]] = defaultdict(dict)
        for chunk in chunks(ids):
            for r in conn.execute(
                select(execution_inputs)
                .where(execution_inputs.c.execution_id.in_(chunk))
                .order_by(execution_inputs.c.execution_id, execution_inputs.c.position)
            ):
                inputs[r.execution_id].append(convert.input_file(r))
            for r in conn.execute(
                select(execution_tags.c.execution_id, execution_tags.c.tag).where(
                    execution_tags.c.execution_id.in_(chunk)
                )
            ):
                tags[r.execution_id].append(r.tag)
            for r in conn.execute(
                select(metric_latest.c.execution_id, metric_latest.c.key, metric_latest.c.value)
                .where(metric_latest.c.execution_id.in_(chunk))
                .order_by(metric_latest.c.execution_id, metric_latest.c.key)
            ):
                metrics[r.execution_id][r.key] = convert.null_to_nan(r.value)
            for r in conn.execute(
                select(metadata_latest)
                .where(metadata_latest.c.execution_id.in_(chunk))
                .order_by(metadata_latest.c.execution_id, metadata_latest.c.key)
            ):
                metrics[r.execution_id][r.key] = r.value
        return [
            convert.execution(
                row, inputs=inputs[row.id], tags=tags[row.id], metrics=metrics[row.id]
            )
            for row in rows
        ]

    def _datums_with_tags(self, conn: Connection, rows: Sequence[Row[Any]]) -> list[Datum]:
        """Entities for datum ``rows`` with their tags (batched)."""
        tags: dict[str, list[str]] = defaultdict(list)
        ids = [row.id for row in rows]
        for chunk in chunks(ids):
            for r in conn.execute(
                select(datum_tags.c.datum_id, datum_tags.c.tag).where(
                    datum_tags.c.datum_id.in_(chunk)
                )
            ):
                tags[r.datum_id].append(r.tag)
        return [convert.datum(row, tags[row.id]) for row in rows]
