"""Quick reads of the embedded SQLite database, without SQLAlchemy.

Importing SQLAlchemy costs a command about a quarter of a second on a small machine: more
than half of what checking out a dataset of 20,000 files takes. The few reads a command
makes before its real work (which tree a dataset version names) are answered here with
the standard library's ``sqlite3``, from the tables the store writes.

Each function answers ``None`` whenever it cannot answer for certain: another backend, no
database file yet, a schema revision other than :data:`HEAD_REVISION`, a name that does
not resolve, any SQLite error. The caller then opens the metadata store, which gives the
answer or the error with its hint. A test checks that both agree.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from urllib.parse import quote

from cairn.entities import DatasetVersion
from cairn.store.sql.names import RESERVED_VERSION
from cairn.store.sql.revisions import HEAD_REVISION

__all__ = ["dataset_version", "sqlite_file"]

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
            query = (
                "SELECT dv.id, dv.project_id, dv.dataset, dv.version, dv.tree_digest,"
                " dv.file_count, dv.size, dv.created_at, dv.source, dv.execution_id,"
                " dv.from_version, dv.metadata"
                " FROM dataset_versions dv JOIN projects p ON p.id = dv.project_id"
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
    if row is None:
        return None
    (id_, project_id, name, version_name, tree, count, size, created, source, execution_id,
     from_version, metadata) = row
    try:
        created_at = datetime.fromisoformat(created).replace(tzinfo=UTC)
        meta = json.loads(metadata) if metadata is not None else None
    except (TypeError, ValueError):
        return None
    return DatasetVersion(
        id=id_, project_id=project_id, dataset=name, version=version_name, tree_digest=tree,
        file_count=count, size=size, created_at=created_at, source=source,
        execution_id=execution_id, from_version=from_version, metadata=meta or {},
    )
