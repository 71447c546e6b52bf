"""Query builders shared by the store's read paths (filters, sorting, id prefixes)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, exists, select
from sqlalchemy.engine import Connection, Row

from cairn.entities import Status
from cairn.errors import CairnError
from cairn.store.sql.orm import execution_tags, executions, metric_latest

SORT_HINT = "sort by counter, created, duration or metric:KEY"

Order = Callable[[Any], Any]


def execution_filters(
    project_id: str,
    step: str | None,
    statuses: Sequence[Status] | None,
    tag: str | None,
) -> list[ColumnElement[bool]]:
    """WHERE clauses on ``executions`` for the list filters."""
    where: list[ColumnElement[bool]] = [executions.c.project_id == project_id]
    if step is not None:
        where.append(executions.c.step == step)
    if statuses is not None:
        where.append(executions.c.status.in_([Status(s).value for s in statuses]))
    if tag is not None:
        where.append(
            exists().where(
                execution_tags.c.execution_id == executions.c.id, execution_tags.c.tag == tag
            )
        )
    return where


def sorted_executions(
    conn: Connection,
    where: list[ColumnElement[bool]],
    sort: str | None,
    descending: bool,
    limit: int | None,
) -> list[Row[Any]]:
    """Execution rows matching ``where`` in the order ``sort`` asks (ties: by counter)."""

    def order(column: Any) -> Any:
        return column.desc() if descending else column.asc()

    key = sort or "counter"
    if key.startswith("metric:") and len(key) > len("metric:"):
        return _by_metric(conn, where, key[len("metric:") :], order, limit)
    query = select(executions).where(*where)
    counter = executions.c.counter
    if key == "counter":
        query = query.order_by(order(counter))
    elif key == "created":
        query = query.order_by(order(executions.c.created_at), order(counter))
    elif key == "duration":
        return _by_duration(conn, where, descending, limit)
    else:
        raise CairnError(f"cannot sort executions by {sort!r}", hint=SORT_HINT)
    if limit is not None:
        query = query.limit(limit)
    return list(conn.execute(query).all())


def _by_duration(
    conn: Connection,
    where: list[ColumnElement[bool]],
    descending: bool,
    limit: int | None,
) -> list[Row[Any]]:
    """Executions by duration; those never started come last, by counter.

    Finished executions carry a stored ``duration`` (indexed, read in order and cut at
    ``limit``); executions started but not ended get theirs computed here from the clock.
    The top of their union is the page.
    """

    def order(column: Any) -> Any:
        return column.desc() if descending else column.asc()

    e = executions
    finished = (
        select(e)
        .where(*where, e.c.duration.is_not(None))
        .order_by(order(e.c.duration), order(e.c.counter))
    )
    if limit is not None:
        finished = finished.limit(limit)
    now = datetime.now(UTC)
    candidates = [(row.duration, row) for row in conn.execute(finished)]
    for row in conn.execute(
        select(e).where(*where, e.c.duration.is_(None), e.c.started_at.is_not(None))
    ):
        candidates.append((((row.ended_at or now) - row.started_at).total_seconds(), row))
    candidates.sort(key=lambda item: (item[0], item[1].counter), reverse=descending)
    rows = [row for _, row in candidates[:limit]]
    if limit is None or len(rows) < limit:
        unstarted = (
            select(e)
            .where(*where, e.c.duration.is_(None), e.c.started_at.is_(None))
            .order_by(order(e.c.counter))
        )
        if limit is not None:
            unstarted = unstarted.limit(limit - len(rows))
        rows.extend(conn.execute(unstarted))
    return rows


def _by_metric(
    conn: Connection,
    where: list[ColumnElement[bool]],
    key: str,
    order: Order,
    limit: int | None,
) -> list[Row[Any]]:
    """Executions with a latest value of ``key`` in value order, then those without.

    The first query walks the ``metric_latest(key, value)`` index in order and stops after
    ``limit`` matches, so its cost follows the page size, not the project size. Only when
    the page is not full does the second one add executions lacking the metric (or whose
    latest value is NaN), by counter.
    """
    m = metric_latest
    with_metric: Select[Any] = (
        select(executions)
        .select_from(m.join(executions, executions.c.id == m.c.execution_id))
        .where(m.c.key == key, m.c.value.is_not(None), *where)
        .order_by(order(m.c.value), order(executions.c.counter))
    )
    if limit is not None:
        with_metric = with_metric.limit(limit)
    rows = list(conn.execute(with_metric).all())
    if limit is not None and len(rows) >= limit:
        return rows
    has_metric = exists().where(
        m.c.execution_id == executions.c.id, m.c.key == key, m.c.value.is_not(None)
    )
    without_metric = (
        select(executions).where(*where, ~has_metric).order_by(order(executions.c.counter))
    )
    if limit is not None:
        without_metric = without_metric.limit(limit - len(rows))
    rows.extend(conn.execute(without_metric).all())
    return rows


def rows_by_id_prefix(
    conn: Connection, table: Table, project_id: str, prefix: str, *, at_most: int
) -> list[Row[Any]]:
    """Up to ``at_most`` rows of ``table`` in the project whose id starts with ``prefix``."""
    ids = table.c.id
    if conn.dialect.name == "sqlite":
        # A range on the primary key finds the candidates through its index (SQLite
        # would rather scan the project's index with LIKE); the project is checked here.
        # Not on PostgreSQL, where a locale collation may not order ids bytewise.
        rows = conn.execute(
            select(table).where(ids >= prefix, ids < prefix + "\U0010ffff").order_by(ids)
        ).all()
        return [row for row in rows if row.project_id == project_id][:at_most]
    return list(
        conn.execute(
            select(table)
            .where(table.c.project_id == project_id, ids.startswith(prefix, autoescape=True))
            .order_by(ids)
            .limit(at_most)
        ).all()
    )
