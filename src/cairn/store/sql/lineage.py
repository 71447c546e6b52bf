"""Lineage and garbage-collection queries in the SQL store (part of ``SqlMetadataStore``).

"Who consumed X" walks ``execution_inputs`` through an index (``datum_id``, or
``uri_head`` for URI prefixes) and only then reads the executions found, so it costs the
size of the answer, not of the project.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, func, or_, select
from sqlalchemy import exc as sa_exc

from cairn.entities import DatasetVersion, Execution, Status
from cairn.store.sql import convert
from cairn.store.sql.core import SqlStoreCore, chunks, translated
from cairn.store.sql.orm import (
    URI_HEAD,
    dataset_versions,
    datums,
    execution_inputs,
    executions,
)
from cairn.store.sql.translate import translate_error

_NOT_STARTED_OR_RUNNING = [
    s.value for s in (Status.CREATED, Status.QUEUED, Status.STARTING, Status.RUNNING)
]
_STREAM_BATCH = 2_000


class LineageParts(SqlStoreCore):
    """Who consumed what, what an execution made, and which blobs are referenced."""

    @translated
    def consumers_of_datum(self, project_id: str, datum_id: str) -> list[Execution]:
        ei = execution_inputs
        return self._executions_consuming(
            project_id, select(ei.c.execution_id).where(ei.c.datum_id == datum_id)
        )

    @translated
    def executions_with_input_uri_prefix(self, project_id: str, prefix: str) -> list[Execution]:
        ei = execution_inputs
        if len(prefix) > 1 and prefix.endswith("/"):
            prefix = prefix[:-1]
        under = prefix + "/"
        match: ColumnElement[bool]
        if len(under) <= URI_HEAD:
            # uri_head holds the URI's first URI_HEAD characters, so for a prefix this short
            # matching the head is matching the URI.
            match = or_(ei.c.uri_head == prefix, self._head_starts_with(under))
        else:
            # Narrow by the (equal) heads through the index, then compare whole URIs.
            match = and_(
                ei.c.uri_head == prefix[:URI_HEAD],
                or_(ei.c.uri == prefix, func.substr(ei.c.uri, 1, len(under)) == under),
            )
        return self._executions_consuming(project_id, select(ei.c.execution_id).where(match))

    def _head_starts_with(self, text: str) -> ColumnElement[bool]:
        """``uri_head`` starts with ``text`` (which ends with ``/``), as an index range."""
        head = execution_inputs.c.uri_head
        if self.dialect == "sqlite":
            # Binary collation: the strings starting with "p/" are exactly [ "p/", "p0" ).
            return and_(head >= text, head < text[:-1] + "0")
        # PostgreSQL: LIKE with a literal prefix walks the text_pattern_ops index whatever
        # the collation; the pattern is inlined so that every plan sees its prefix.
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return head.like(bindparam("uri_pattern", escaped + "%", literal_execute=True),
                         escape="\\")  # fmt: skip

    def _executions_consuming(self, project_id: str, execution_ids: Select[Any]) -> list[Execution]:
        """The project's executions among those ``execution_ids`` selects, by counter.

        Two steps, each through an index: the ids, then the executions by primary key.
        (One query joining them lets SQLite prefer walking the whole project in counter
        order.) The project is checked here.
        """
        e = executions
        with self._read() as conn:
            ids = list(conn.execute(execution_ids.distinct()).scalars())
            rows = [
                row
                for chunk in chunks(ids)
                for row in conn.execute(select(e).where(e.c.id.in_(chunk)))
                if row.project_id == project_id
            ]
            rows.sort(key=lambda row: row.counter)
            return self._hydrate(conn, rows)

    @translated
    def dataset_versions_of_execution(
        self, project_id: str, execution_id: str
    ) -> list[DatasetVersion]:
        dv = dataset_versions
        with self._read() as conn:
            rows = conn.execute(
                select(dv)
                .where(dv.c.project_id == project_id, dv.c.execution_id == execution_id)
                .order_by(dv.c.created_at, dv.c.id)
            ).all()
        return [convert.dataset_version(row) for row in rows]

    # -- garbage collection -------------------------------------------------------------
    def referenced_digests(self) -> Iterator[str]:
        """See :meth:`MetadataStore.referenced_digests`.

        One read transaction; each source is read with ``DISTINCT`` in batches (a
        server-side cursor on PostgreSQL), so memory stays flat however many rows there are.
        """
        e = executions
        sources: list[Select[Any]] = [
            select(datums.c.digest).distinct(),
            select(execution_inputs.c.digest).distinct(),
            select(e.c.code["tree_digest"].as_string()).distinct(),
            select(e.c.log_digest).distinct(),
            select(e.c.environment["packages_digest"].as_string()).distinct(),
            select(dataset_versions.c.tree_digest).distinct(),
        ]
        try:
            with self.engine.connect() as conn, conn.begin():
                streaming = conn.execution_options(stream_results=True, yield_per=_STREAM_BATCH)
                for query in sources:
                    for digest in streaming.execute(query).scalars():
                        if digest:
                            yield digest
        except sa_exc.SQLAlchemyError as exc:
            raise translate_error(exc, dialect=self.dialect, where=self._where) from exc

    @translated
    def oldest_active_start(self) -> datetime | None:
        with self._read() as conn:
            value: datetime | None = conn.execute(
                select(func.min(executions.c.created_at)).where(
                    executions.c.status.in_(_NOT_STARTED_OR_RUNNING)
                )
            ).scalar()
        return value
