"""Datums and their aliases in the SQL store (part of ``SqlMetadataStore``)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, insert, select, update
from sqlalchemy.engine import Connection, Row

from cairn.entities import AliasEvent, Datum, DatumAlias
from cairn.errors import NotFoundError
from cairn.store.sql import convert, queries
from cairn.store.sql.core import MIN_PREFIX, SqlStoreCore, chunks, now, translated
from cairn.store.sql.names import check_alias_name
from cairn.store.sql.orm import alias_events, aliases, datum_tags
from cairn.store.sql.orm import datums as datums_table

_GLOB_MAGIC = "*?["
_LIKE_ESCAPE = "\\"

DATUMS_HINT = "`cairn data ls` lists datums, `cairn data aliases` their aliases"


class DatumParts(SqlStoreCore):
    """Datums, datum tags and aliases."""

    # -- datums -----------------------------------------------------------------------
    @translated
    def add_datums(self, datums: Sequence[Datum]) -> None:
        if not datums:
            return
        for item in datums:
            convert.ensure_aware("created_at", item.created_at)
        with self._write() as conn:
            conn.execute(insert(datums_table), [convert.datum_row(item) for item in datums])
            tag_rows = [
                {"datum_id": item.id, "tag": tag} for item in datums for tag in set(item.tags)
            ]
            if tag_rows:
                conn.execute(insert(datum_tags), tag_rows)

    @translated
    def get_datum(self, project_id: str, ref: str) -> Datum:
        text_ref = ref.strip().removeprefix("datum://")
        with self._read() as conn:
            row = self._datum_by_id(conn, project_id, text_ref)
            if row is None:
                if len(text_ref) < MIN_PREFIX:
                    raise NotFoundError(
                        f"no datum {ref!r}: an id prefix needs at least {MIN_PREFIX} characters",
                        hint="give more characters of the datum id",
                    )
                row = self._datum_by_prefix(conn, project_id, text_ref, ref)
                if row is None:
                    raise NotFoundError(
                        f"no datum matches {ref!r} in this project",
                        hint="`cairn outputs EXECUTION` lists an execution's datums",
                    )
            return self._datums_with_tags(conn, [row])[0]

    def _datum_by_id(self, conn: Connection, project_id: str, datum_id: str) -> Row[Any] | None:
        return conn.execute(
            select(datums_table).where(
                datums_table.c.project_id == project_id, datums_table.c.id == datum_id
            )
        ).first()

    def _datum_by_prefix(
        self, conn: Connection, project_id: str, prefix: str, ref: str
    ) -> Row[Any] | None:
        """The one datum whose id starts with ``prefix``; ``NotFoundError`` if several."""
        rows = queries.rows_by_id_prefix(conn, datums_table, project_id, prefix, at_most=11)
        if len(rows) > 1:
            shown = ", ".join(f"{r.id} ({r.name})" for r in rows[:10])
            raise NotFoundError(
                f"datum id prefix {ref!r} is ambiguous: it matches {shown}",
                hint="give more characters of the datum id",
            )
        return rows[0] if rows else None

    @translated
    def list_datums(
        self,
        project_id: str,
        *,
        execution_id: str | None = None,
        name_glob: str | None = None,
        tag: str | None = None,
        min_size: int | None = None,
        max_size: int | None = None,
        limit: int | None = None,
    ) -> list[Datum]:
        """See :meth:`MetadataStore.list_datums`.

        A glob without ``[...]`` classes runs in SQL (SQLite ``GLOB``, PostgreSQL
        ``LIKE``); one with classes narrows by its literal head in SQL and is matched
        here with :func:`fnmatch.fnmatchcase`.
        """
        if limit is not None and limit <= 0:
            return []
        d = datums_table
        where: list[ColumnElement[bool]] = [d.c.project_id == project_id]
        if execution_id is not None:
            where.append(d.c.execution_id == execution_id)
        if tag is not None:
            where.append(
                exists().where(datum_tags.c.datum_id == d.c.id, datum_tags.c.tag == tag)
            )
        if min_size is not None:
            where.append(d.c.size >= min_size)
        if max_size is not None:
            where.append(d.c.size <= max_size)
        exact = True
        if name_glob is not None:
            clause, exact = _glob_clause(d.c.name, name_glob, self.dialect)
            where.append(clause)
        query = select(d).where(*where).order_by(d.c.name, d.c.created_at, d.c.id)
        with self._read() as conn:
            if exact:
                if limit is not None:
                    query = query.limit(limit)
                rows: list[Row[Any]] = list(conn.execute(query).all())
            else:
                assert name_glob is not None
                rows = []
                for row in conn.execute(query):
                    if fnmatch.fnmatchcase(row.name, name_glob):
                        rows.append(row)
                        if limit is not None and len(rows) >= limit:
                            break
            return self._datums_with_tags(conn, rows)

    @translated
    def get_datums(self, project_id: str, ids: Iterable[str | None]) -> list[Datum]:
        wanted = list(dict.fromkeys(i for i in ids if i is not None))
        found: dict[str, Row[Any]] = {}
        with self._read() as conn:
            for chunk in chunks(wanted):
                # By primary key only: with the project in the WHERE clause SQLite would
                # rather walk the project's name index. The project is checked here.
                for row in conn.execute(select(datums_table).where(datums_table.c.id.in_(chunk))):
                    if row.project_id == project_id:
                        found[row.id] = row
            return self._datums_with_tags(conn, [found[i] for i in wanted if i in found])

    @translated
    def add_datum_tags(self, datum_id: str, tags: Iterable[str]) -> None:
        wanted = sorted(set(tags))
        with self._write() as conn:
            if conn.execute(
                select(datums_table.c.id).where(datums_table.c.id == datum_id)
            ).first() is None:
                raise NotFoundError(f"no datum with id {datum_id!r}", hint=DATUMS_HINT)
            self._upsert(
                conn,
                datum_tags,
                [{"datum_id": datum_id, "tag": tag} for tag in wanted],
                keys=("datum_id", "tag"),
            )

    @translated
    def resolve_datum(self, project_id: str, ref: str) -> Datum:
        text_ref = ref.strip().removeprefix("datum://")
        with self._read() as conn:
            row = self._datum_by_id(conn, project_id, text_ref) if text_ref else None
            if row is None and text_ref:
                target = conn.execute(
                    select(aliases.c.datum_id).where(
                        aliases.c.project_id == project_id, aliases.c.name == text_ref
                    )
                ).scalar()
                if target is not None:
                    row = self._datum_by_id(conn, project_id, target)
            if row is None and len(text_ref) >= MIN_PREFIX:
                row = self._datum_by_prefix(conn, project_id, text_ref, ref)
            if row is None:
                close = self._close_alias_names(conn, project_id, text_ref)
                if close:
                    hint = "did you mean " + " or ".join(f"datum://{n}" for n in close) + "?"
                elif 0 < len(text_ref) < MIN_PREFIX:
                    hint = f"an id prefix needs at least {MIN_PREFIX} characters; " + DATUMS_HINT
                else:
                    hint = DATUMS_HINT
                raise NotFoundError(f"no datum or alias {ref!r} in this project", hint=hint)
            return self._datums_with_tags(conn, [row])[0]

    # -- aliases ----------------------------------------------------------------------
    @translated
    def set_alias(
        self, project_id: str, name: str, datum_id: str, *, execution_id: str | None = None
    ) -> DatumAlias:
        check_alias_name(name)
        key = (aliases.c.project_id == project_id, aliases.c.name == name)
        with self._write() as conn:
            if self._datum_by_id(conn, project_id, datum_id) is None:
                raise NotFoundError(
                    f"cannot point alias {name!r} at datum {datum_id!r}: no such datum in "
                    "this project",
                    hint="give a full datum id; " + DATUMS_HINT,
                )
            if execution_id is not None:
                self._require_execution(conn, execution_id, project_id=project_id)
            current = self._locked_alias(conn, project_id, name)
            at = now()  # taken under the lock, so events of one alias are in time order
            if current is None:
                # On PostgreSQL a concurrent creator may insert it first: then it is moved.
                inserted = self._insert_if_absent(
                    conn,
                    aliases,
                    {
                        "project_id": project_id,
                        "name": name,
                        "datum_id": datum_id,
                        "updated_at": at,
                        "execution_id": execution_id,
                    },
                    keys=("project_id", "name"),
                )
                if inserted:
                    self._add_alias_event(conn, project_id, name, datum_id, None, at,
                                          execution_id)  # fmt: skip
                    return DatumAlias(project_id, name, datum_id, at, execution_id)
                current = self._locked_alias(conn, project_id, name)
                assert current is not None
                at = now()
            if current.datum_id == datum_id:
                return convert.alias(current)
            conn.execute(
                update(aliases)
                .where(*key)
                .values(datum_id=datum_id, updated_at=at, execution_id=execution_id)
            )
            self._add_alias_event(
                conn, project_id, name, datum_id, current.datum_id, at, execution_id
            )
        return DatumAlias(project_id, name, datum_id, at, execution_id)

    def _locked_alias(self, conn: Connection, project_id: str, name: str) -> Row[Any] | None:
        query = select(aliases).where(aliases.c.project_id == project_id, aliases.c.name == name)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        return conn.execute(query).first()

    def _add_alias_event(
        self,
        conn: Connection,
        project_id: str,
        name: str,
        datum_id: str,
        previous: str | None,
        at: Any,
        execution_id: str | None,
    ) -> None:
        conn.execute(
            insert(alias_events).values(
                project_id=project_id,
                name=name,
                datum_id=datum_id,
                previous_datum_id=previous,
                at=at,
                execution_id=execution_id,
            )
        )

    @translated
    def get_alias(self, project_id: str, name: str) -> DatumAlias:
        with self._read() as conn:
            row = conn.execute(
                select(aliases).where(aliases.c.project_id == project_id, aliases.c.name == name)
            ).first()
            if row is None:
                raise self._no_alias(conn, project_id, name)
        return convert.alias(row)

    @translated
    def list_aliases(self, project_id: str) -> list[DatumAlias]:
        with self._read() as conn:
            rows = conn.execute(
                select(aliases).where(aliases.c.project_id == project_id).order_by(aliases.c.name)
            ).all()
        return [convert.alias(row) for row in rows]

    @translated
    def alias_history(self, project_id: str, name: str) -> list[AliasEvent]:
        with self._read() as conn:
            rows = conn.execute(
                select(alias_events)
                .where(alias_events.c.project_id == project_id, alias_events.c.name == name)
                .order_by(alias_events.c.id)
            ).all()
            if not rows:
                raise self._no_alias(conn, project_id, name)
        return [convert.alias_event(row) for row in rows]

    @translated
    def delete_alias(self, project_id: str, name: str) -> None:
        with self._write() as conn:
            deleted = conn.execute(
                delete(aliases).where(aliases.c.project_id == project_id, aliases.c.name == name)
            ).rowcount
            if deleted == 0:
                raise self._no_alias(conn, project_id, name)

    def _no_alias(self, conn: Connection, project_id: str, name: str) -> NotFoundError:
        close = self._close_alias_names(conn, project_id, name)
        if close:
            hint = "did you mean " + " or ".join(repr(n) for n in close) + "?"
        else:
            hint = "`cairn data aliases` lists the aliases"
        return NotFoundError(f"no alias {name!r}", hint=hint)

    def _close_alias_names(self, conn: Connection, project_id: str, name: str) -> list[str]:
        if not name:
            return []
        import difflib  # only on this error path

        names = conn.execute(
            select(aliases.c.name).where(aliases.c.project_id == project_id)
        ).scalars().all()
        return difflib.get_close_matches(name, list(names), n=3, cutoff=0.6)


def _glob_clause(column: Any, pattern: str, dialect: str) -> tuple[ColumnElement[bool], bool]:
    """A WHERE clause for names matching ``pattern`` (fnmatch semantics) and whether it is
    exact; when not, it only narrows by the pattern's literal head and the caller matches
    each row with :func:`fnmatch.fnmatchcase`.

    Without ``[...]`` a glob maps exactly: SQLite ``GLOB`` has the same ``*`` and ``?``
    (both cross ``/``); PostgreSQL ``LIKE`` gets ``%``/``_`` with the literal ``%``, ``_``
    and ``\\`` escaped. Character classes differ between the three, so they are left to
    fnmatch. Both forms use an index when the pattern starts with literal text (SQLite's
    LIKE/GLOB optimization on a binary-collated column).
    """
    if "[" not in pattern:
        if dialect == "sqlite":
            return column.op("GLOB")(pattern), True
        return column.like(_like_pattern(pattern), escape=_LIKE_ESCAPE), True
    head = pattern[: min(pattern.find(c) if c in pattern else len(pattern) for c in _GLOB_MAGIC)]
    if dialect == "sqlite":
        return column.op("GLOB")(head + "*"), False  # the head holds no GLOB magic
    return column.like(_like_pattern(head) + "%", escape=_LIKE_ESCAPE), False


def _like_pattern(glob: str) -> str:
    """A LIKE pattern (escape ``\\``) for a glob of only ``*`` and ``?`` wildcards."""
    out = []
    for char in glob:
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        elif char in "%_\\":
            out.append(_LIKE_ESCAPE + char)
        else:
            out.append(char)
    return "".join(out)
