"""Dataset versions in the SQL store (part of ``SqlMetadataStore``).

Creating a version locks its dataset's row (SQLite: the write lock; PostgreSQL: ``SELECT
... FOR UPDATE`` after an ``INSERT ... ON CONFLICT DO NOTHING`` that creates it), so
creators of versions of one dataset run one at a time: the "already exists" check is
exact, and each version's ``created_at`` can be made later than the previous one's.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection, Row

from cairn.entities import DatasetVersion
from cairn.errors import ConflictError, NotFoundError
from cairn.store.sql import convert
from cairn.store.sql.core import SqlStoreCore, now, translated
from cairn.store.sql.names import (
    RESERVED_VERSION,
    check_dataset_names,
    check_source,
    next_version,
)
from cairn.store.sql.orm import dataset_versions, datasets

_TICK = timedelta(microseconds=1)
_SHOWN = 10  # names listed in a hint


class DatasetParts(SqlStoreCore):
    """Datasets and their immutable versions."""

    @translated
    def create_dataset_version(
        self,
        project_id: str,
        dataset: str,
        version: str,
        *,
        tree_digest: str,
        file_count: int,
        size: int,
        source: str = "upload",
        execution_id: str | None = None,
        from_version: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> DatasetVersion:
        check_dataset_names(dataset, version)
        check_source(source)
        dv = dataset_versions
        version_id = str(uuid.uuid4())
        try:
            with self._write() as conn:
                if execution_id is not None:
                    self._require_execution(conn, execution_id, project_id=project_id)
                created_at = now()
                self._upsert(
                    conn,
                    datasets,
                    [{"project_id": project_id, "name": dataset, "created_at": created_at}],
                    keys=("project_id", "name"),
                )
                lock = select(datasets.c.name).where(
                    datasets.c.project_id == project_id, datasets.c.name == dataset
                )
                if self.dialect == "postgresql":
                    lock = lock.with_for_update()
                conn.execute(lock).one()
                names = self._version_names(conn, project_id, dataset)
                if version in names:
                    raise _exists(dataset, version, names)
                last = conn.execute(
                    select(func.max(dv.c.created_at)).where(
                        dv.c.project_id == project_id, dv.c.dataset == dataset
                    )
                ).scalar()
                if last is not None and created_at <= last:
                    created_at = last + _TICK  # clocks step back; "latest" must not
                row = {
                    "id": version_id,
                    "project_id": project_id,
                    "dataset": dataset,
                    "version": version,
                    "tree_digest": tree_digest,
                    "file_count": int(file_count),
                    "size": int(size),
                    "created_at": created_at,
                    "source": source,
                    "execution_id": execution_id,
                    "from_version": from_version,
                    "metadata": dict(metadata or {}),
                }
                conn.execute(insert(dv).values(**row))
        except sa_exc.IntegrityError as exc:
            # Only reachable if the lock above did not hold (it does on both backends).
            with self._read() as conn:
                names = self._version_names(conn, project_id, dataset)
            if version in names:
                raise _exists(dataset, version, names) from exc
            raise
        return DatasetVersion(
            id=version_id,
            project_id=project_id,
            dataset=dataset,
            version=version,
            tree_digest=tree_digest,
            file_count=int(file_count),
            size=int(size),
            created_at=created_at,
            source=source,
            execution_id=execution_id,
            from_version=from_version,
            metadata=dict(metadata or {}),
        )

    @translated
    def get_dataset_version(self, project_id: str, dataset: str, version: str) -> DatasetVersion:
        dv = dataset_versions
        query = select(dv).where(dv.c.project_id == project_id, dv.c.dataset == dataset)
        if version == RESERVED_VERSION:
            query = query.order_by(dv.c.created_at.desc()).limit(1)
        else:
            query = query.where(dv.c.version == version)
        with self._read() as conn:
            row = conn.execute(query).first()
            if row is None:
                self._require_dataset(conn, project_id, dataset)
                names = self._version_names(conn, project_id, dataset)
                if not names:
                    raise NotFoundError(
                        f"dataset {dataset!r} has no versions yet",
                        hint=f"add one with `cairn dataset add {dataset} FOLDER`",
                    )
                raise NotFoundError(
                    f"no dataset version {dataset}/{version}",
                    hint=f"versions of {dataset}: {_listed(names)}",
                )
        return convert.dataset_version(row)

    @translated
    def list_datasets(self, project_id: str) -> list[tuple[str, int, DatasetVersion | None]]:
        dv = dataset_versions
        newer = dv.alias("newer")
        with self._read() as conn:
            names = conn.execute(
                select(datasets.c.name)
                .where(datasets.c.project_id == project_id)
                .order_by(datasets.c.name)
            ).scalars().all()
            counts: dict[str, int] = {
                dataset: int(count)
                for dataset, count in conn.execute(
                    select(dv.c.dataset, func.count())
                    .where(dv.c.project_id == project_id)
                    .group_by(dv.c.dataset)
                )
            }
            # The latest version of each dataset: the one no version of it is newer than.
            latest_rows = conn.execute(
                select(dv).where(
                    dv.c.project_id == project_id,
                    ~select(newer.c.id)
                    .where(
                        newer.c.project_id == dv.c.project_id,
                        newer.c.dataset == dv.c.dataset,
                        newer.c.created_at > dv.c.created_at,
                    )
                    .exists(),
                )
            ).all()
        latest = {row.dataset: convert.dataset_version(row) for row in latest_rows}
        return [(name, counts.get(name, 0), latest.get(name)) for name in names]

    @translated
    def list_dataset_versions(self, project_id: str, dataset: str) -> list[DatasetVersion]:
        dv = dataset_versions
        with self._read() as conn:
            rows = conn.execute(
                select(dv)
                .where(dv.c.project_id == project_id, dv.c.dataset == dataset)
                .order_by(dv.c.created_at, dv.c.id)
            ).all()
            if not rows:
                self._require_dataset(conn, project_id, dataset)
        return [convert.dataset_version(row) for row in rows]

    @translated
    def next_version_name(self, project_id: str, dataset: str) -> str:
        with self._read() as conn:
            return next_version(self._version_names(conn, project_id, dataset))

    def _version_names(self, conn: Connection, project_id: str, dataset: str) -> list[str]:
        """The dataset's version names, oldest first."""
        dv = dataset_versions
        return list(
            conn.execute(
                select(dv.c.version)
                .where(dv.c.project_id == project_id, dv.c.dataset == dataset)
                .order_by(dv.c.created_at, dv.c.id)
            ).scalars()
        )

    def _require_dataset(self, conn: Connection, project_id: str, dataset: str) -> Row[Any]:
        row = conn.execute(
            select(datasets).where(datasets.c.project_id == project_id, datasets.c.name == dataset)
        ).first()
        if row is not None:
            return row
        known = conn.execute(
            select(datasets.c.name)
            .where(datasets.c.project_id == project_id)
            .order_by(datasets.c.name)
        ).scalars().all()
        hint = (
            f"known datasets: {_listed(list(known), newest_last=False)}"
            if known
            else "this project has no datasets yet: `cairn dataset add NAME FOLDER` makes one"
        )
        raise NotFoundError(f"no dataset {dataset!r} in this project", hint=hint)


def _exists(dataset: str, version: str, names: list[str]) -> ConflictError:
    return ConflictError(
        f"dataset version {dataset}/{version} already exists",
        hint=f"versions are immutable: pick a new version name, e.g. {next_version(names)}",
    )


def _listed(names: list[str], *, newest_last: bool = True) -> str:
    """At most :data:`_SHOWN` names, comma-separated: the last ones when ``newest_last``
    (versions, oldest first: the newest matter most), else the first ones."""
    if len(names) <= _SHOWN:
        return ", ".join(names)
    hidden = len(names) - _SHOWN
    if newest_last:
        return f"... ({hidden} older), {', '.join(names[-_SHOWN:])}"
    return f"{', '.join(names[:_SHOWN])}, ... ({hidden} more)"
