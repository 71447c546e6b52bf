"""Quick reads (and one write) of the embedded SQLite database, without SQLAlchemy.

Importing SQLAlchemy costs a command about a quarter of a second on a small machine: more
than half of what checking out a dataset of 20,000 files takes. The few reads a command
makes before its real work (which tree a dataset version names) are answered here with
the standard library's ``sqlite3``, from the tables the store writes.

One write is made here too, the most frequent one from the command line: the version
``cairn dataset add`` records for a folder (:func:`add_dataset_version`), in one
``BEGIN IMMEDIATE`` transaction that does what the store's ``create_dataset_version``
does for an upload.

Each function answers ``None`` whenever it cannot answer for certain: another backend, no
database file yet, a schema revision other than :data:`HEAD_REVISION`, a name that does
not resolve, a project not made yet, any SQLite error. The caller then opens the metadata
store, which gives the answer or the error with its hint. Tests check that both agree.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from cairn.entities import DatasetVersion
from cairn.store.sql.names import RESERVED_VERSION, check_dataset_names, next_version
from cairn.store.sql.revisions import HEAD_REVISION

__all__ = ["add_dataset_version", "dataset_version", "project_id", "sqlite_file"]

#: Every column of ``dataset_versions`` (a test checks them against the models).
_VERSION_COLUMNS = (
    "id", "project_id", "dataset", "version", "tree_digest", "file_count", "size",
    "created_at", "source", "execution_id", "from_version", "metadata")
_SELECT_VERSION = "SELECT " + ", ".join(f"dv.{c}" for c in _VERSION_COLUMNS)

_PREFIX = "sqlite:///"


def sqlite_file(url: str) -> str | None:
    """The database file of a plain ``sqlite:///PATH`` URL, or None (anything else)."""
    if not url.startswith(_PREFIX):
        return None
    path = url[len(_PREFIX):]
    if not path or path == ":memory:" or path.startswith("file:") or "?" in path or "%" in path:
        return None
    return path


def _connect(url: str) -> sqlite3.Connection | None:
    """A connection to an existing database at the current revision, or None."""
    path = sqlite_file(url)
    if path is None or not os.path.isfile(path):
        return None
    # mode=rw: never create a database here (opening the store does that, with its schema).
    conn = sqlite3.connect(f"file:{quote(path)}?mode=rw", uri=True, timeout=60,
                           isolation_level=None)
    try:
        # As the store's engine sets them (see cairn.store.sql.engine).
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        conn.close()
        return None
    if rows != [(HEAD_REVISION,)]:
        conn.close()
        return None
    return conn


def dataset_version(url: str, project: str, dataset: str, version: str) -> DatasetVersion | None:
    """``dataset://dataset/version`` of project ``project`` (``latest``: the newest)."""
    try:
        conn = _connect(url)
        if conn is None:
            return None
        try:
            query = (_SELECT_VERSION + " FROM dataset_versions dv"
                     " JOIN projects p ON p.id = dv.project_id"
                     " WHERE p.name = ? AND dv.dataset = ?")
            if version == RESERVED_VERSION:
                row = conn.execute(query + " ORDER BY dv.created_at DESC LIMIT 1",
                                   (project, dataset)).fetchone()
            else:
                row = conn.execute(query + " AND dv.version = ?",
                                   (project, dataset, version)).fetchone()
        finally:
            conn.close()
    except (sqlite3.Error, OSError):
        return None
    return _entity(row) if row is not None else None


def _entity(row: tuple[Any, ...]) -> DatasetVersion | None:
    (id_, project, name, version_name, tree, count, size, created, source, execution_id,
     from_version, metadata) = row
    try:
        created_at = datetime.fromisoformat(created).replace(tzinfo=UTC)
        meta = json.loads(metadata) if metadata is not None else None
    except (TypeError, ValueError):
        return None
    return DatasetVersion(
        id=id_, project_id=project, dataset=name, version=version_name, tree_digest=tree,
        file_count=count, size=size, created_at=created_at, source=source,
        execution_id=execution_id, from_version=from_version, metadata=meta or {},
    )


def _text(at: datetime) -> str:
    """A UTC time as the store keeps it in SQLite (naive, microseconds always shown)."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def project_id(url: str, project: str) -> str | None:
    """The id of project ``project``, if the database is one this module can write."""
    try:
        conn = _connect(url)
        if conn is None:
            return None
        try:
            row = conn.execute("SELECT id FROM projects WHERE name = ?", (project,)).fetchone()
        finally:
            conn.close()
    except (sqlite3.Error, OSError):
        return None
    return row[0] if row is not None else None


def add_dataset_version(
    url: str, project: str, dataset: str, version: str | None, *, tree_digest: str,
    file_count: int, size: int, metadata: dict[str, Any],
) -> tuple[DatasetVersion, bool] | None:
    """Record an uploaded folder as a version of ``dataset``, as the store would.

    ``version`` None: the next ``vN``, unless the latest version holds ``tree_digest``
    already: then that one is returned, and False. The new version is derived from the
    latest (``from_version``). None: not here (see the module doc), nor when ``version``
    exists (the store then says so, with its hint). Raises ``ParameterError`` for names
    the store refuses too.
    """
    check_dataset_names(dataset, version or "v1")
    try:
        conn = _connect(url)
        if conn is None:
            return None
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = _add(conn, project, dataset, version, tree_digest, file_count, size,
                              metadata)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT" if result is not None and result[1] else "ROLLBACK")
        finally:
            conn.close()
    except (sqlite3.Error, OSError):
        return None
    return result


def _add(conn: sqlite3.Connection, project: str, dataset: str, version: str | None,
         tree_digest: str, file_count: int, size: int,
         metadata: dict[str, Any]) -> tuple[DatasetVersion, bool] | None:
    row = conn.execute("SELECT id FROM projects WHERE name = ?", (project,)).fetchone()
    if row is None:
        return None  # made by the store, with what a new project needs
    pid = row[0]
    names = [r[0] for r in conn.execute(
        "SELECT version FROM dataset_versions WHERE project_id = ? AND dataset = ?"
        " ORDER BY created_at, id", (pid, dataset))]
    if version is not None and version in names:
        return None
    latest_row = conn.execute(
        _SELECT_VERSION + " FROM dataset_versions dv WHERE dv.project_id = ?"
        " AND dv.dataset = ? ORDER BY dv.created_at DESC LIMIT 1", (pid, dataset)).fetchone()
    latest = _entity(latest_row) if latest_row is not None else None
    if latest_row is not None and latest is None:
        return None
    if version is None and latest is not None and latest.tree_digest == tree_digest:
        return latest, False
    created_at = datetime.now(UTC)
    if latest is not None and created_at <= latest.created_at:
        created_at = latest.created_at + timedelta(microseconds=1)  # "latest" must not step back
    made = DatasetVersion(
        id=str(uuid.uuid4()), project_id=pid, dataset=dataset,
        version=version or next_version(names), tree_digest=tree_digest,
        file_count=int(file_count), size=int(size), created_at=created_at, source="upload",
        execution_id=None, from_version=latest.version if latest is not None else None,
        metadata=dict(metadata))
    conn.execute("INSERT INTO datasets (project_id, name, created_at) VALUES (?, ?, ?)"
                 " ON CONFLICT DO NOTHING", (pid, dataset, _text(created_at)))
    conn.execute(
        f"INSERT INTO dataset_versions ({', '.join(_VERSION_COLUMNS)})"
        f" VALUES ({', '.join('?' * len(_VERSION_COLUMNS))})",
        (made.id, pid, dataset, made.version, tree_digest, made.file_count, made.size,
         _text(created_at), "upload", None, made.from_version, json.dumps(made.metadata)))
    return made, True
