"""``SqlMetadataStore``: the metadata store on SQLite (default) or PostgreSQL.

One code path serves both databases; where they differ (how the write lock is taken, the
SQL for a duration, the fastest bulk insert) the difference is local and commented.
SQLAlchemy and driver exceptions are translated into :mod:`cairn.errors` in one place
(:mod:`.translate`), and rows become entities (:mod:`.convert`) before
any method returns.

This module holds projects, executions and metrics; the class also gets datums and
aliases from :mod:`.datums`, dataset versions from :mod:`.datasets` and lineage and gc
queries from :mod:`.lineage` (shared plumbing: :mod:`.core`).
"""

from __future__ import annotations

import logging
import os
import uuid
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Row

from cairn.entities import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Execution,
    MetricPoint,
    Project,
    Resources,
    Status,
)
from cairn.errors import NotFoundError
from cairn.store.base import Allocation, MetadataStore, NewExecution
from cairn.store.sql import convert, queries, schema
from cairn.store.sql.core import MIN_PREFIX, SqlStoreCore, chunks, no_execution, now, translated
from cairn.store.sql.datasets import DatasetParts
from cairn.store.sql.datums import DatumParts
from cairn.store.sql.flows import FlowParts
from cairn.store.sql.engine import (
    create_store_engine,
    display_url,
    normalize_url,
    sqlite_path,
    write_options,
)
from cairn.store.sql.lineage import LineageParts
from cairn.store.sql.orm import (
    counters,
    execution_inputs,
    execution_tags,
    executions,
    metadata_latest,
    metric_latest,
    metric_points,
    projects,
)

log = logging.getLogger(__name__)

_PG_ALLOCATE_LOCK = 0x63616973  # any constant all cairn processes agree on

QUEUE_ORDER = (
    executions.c.priority.desc(), executions.c.queued_at, executions.c.counter,
    executions.c.id,
)
"""The order queued executions are dispatched in: higher priority first, then FIFO."""

TRANSITION_FIELDS = frozenset(
    {
        "exit_code",
        "status_detail",
        "queued_at",
        "started_at",
        "ended_at",
        "host",
        "pid",
        "log_digest",
        "code_reads",
        "node",
    }
)
_FINAL = [s.value for s in FINAL_STATUSES]
_ACTIVE = [s.value for s in ACTIVE_STATUSES]


class SqlMetadataStore(
    DatumParts, DatasetParts, LineageParts, FlowParts, SqlStoreCore, MetadataStore
):
    """Metadata on SQLite (``sqlite:///path``) or PostgreSQL (``postgresql://...``).

    Opening a brand-new database creates the schema; a database written by an older or
    newer cairn raises :class:`cairn.errors.SchemaError`. Safe to share between threads;
    any number of processes may open the same database.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._url = normalize_url(url)
        self._path = sqlite_path(self._url) if self._url.get_backend_name() == "sqlite" else None
        self._where = str(self._path) if self._path else display_url(self._url)
        self.engine: Engine = create_store_engine(self._url)
        self.dialect: str = self.engine.dialect.name
        self._writer = self.engine.execution_options(**write_options())
        _forget_connections_after_fork(self.engine)
        try:
            self._open()
        except BaseException:
            self.engine.dispose()
            raise

    @translated
    def _open(self) -> None:
        if schema.is_empty(self.engine):
            log.info("creating the cairn metadata schema at %s", self._where)
            schema.upgrade(self._url, engine=self.engine)
        schema.check_schema(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"SqlMetadataStore({display_url(self._url)!r})"

    # -- projects ---------------------------------------------------------------------
    @translated
    def ensure_project(self, name: str) -> Project:
        with self._read() as conn:
            row = conn.execute(select(projects).where(projects.c.name == name)).first()
        if row is not None:
            return convert.project(row)
        project_id = str(uuid.uuid4())
        try:
            with self._write() as conn:
                row = conn.execute(select(projects).where(projects.c.name == name)).first()
                if row is not None:
                    return convert.project(row)
                conn.execute(insert(projects).values(id=project_id, name=name, created_at=now()))
                conn.execute(insert(counters).values(project_id=project_id, value=0))
        except sa_exc.IntegrityError:
            # PostgreSQL: another process created it between our read and our insert.
            with self._read() as conn:
                row = conn.execute(select(projects).where(projects.c.name == name)).one()
            return convert.project(row)
        return Project(id=project_id, name=name)

    # -- executions -------------------------------------------------------------------
    @translated
    def create_execution(self, new: NewExecution) -> Execution:
        execution_id = str(uuid.uuid4())
        created_at = now()
        tags = sorted(set(new.tags))
        with self._write() as conn:
            # UPDATE takes the row lock (PostgreSQL) inside the write lock (SQLite), so
            # reading the bumped value back in the same transaction is atomic everywhere.
            bumped = conn.execute(
                update(counters)
                .where(counters.c.project_id == new.project_id)
                .values(value=counters.c.value + 1)
            )
            if bumped.rowcount != 1:
                raise NotFoundError(
                    f"no project with id {new.project_id!r}",
                    hint="create it first with ensure_project(name)",
                )
            counter = conn.execute(
                select(counters.c.value).where(counters.c.project_id == new.project_id)
            ).scalar_one()
            conn.execute(
                insert(executions).values(
                    id=execution_id,
                    project_id=new.project_id,
                    counter=counter,
                    step=new.step,
                    status=Status.CREATED.value,
                    parameters=new.parameters,
                    command=list(new.command),
                    code=convert.code_to_json(new.code),
                    environment=new.environment,
                    step_config=new.step_config,
                    resources=new.resources.to_dict(),
                    title=new.title,
                    rerun_of=new.rerun_of,
                    created_at=created_at,
                    time_limit=new.time_limit,
                    no_output_timeout=new.no_output_timeout,
                    gpu_ids=[],
                    stop_requested=False,
                    fingerprint=new.fingerprint,
                    priority=new.priority,
                    backend=str((new.environment.get("machine_environment") or {})
                                .get("backend") or "local"),
                    restart_of=new.restart_of,
                )
            )
            if new.inputs:
                conn.execute(insert(execution_inputs), convert.input_rows(execution_id, new.inputs))
            if tags:
                conn.execute(
                    insert(execution_tags),
                    [{"execution_id": execution_id, "tag": tag} for tag in tags],
                )
        return Execution(
            id=execution_id,
            project_id=new.project_id,
            counter=counter,
            step=new.step,
            status=Status.CREATED,
            parameters=new.parameters,
            command=list(new.command),
            inputs=list(new.inputs),
            code=new.code,
            environment=new.environment,
            step_config=new.step_config,
            resources=new.resources,
            created_at=created_at,
            title=new.title,
            tags=tuple(tags),
            rerun_of=new.rerun_of,
            time_limit=new.time_limit,
            no_output_timeout=new.no_output_timeout,
            fingerprint=new.fingerprint,
            priority=new.priority,
            restart_of=new.restart_of,
        )

    @translated
    def reuse_candidates(
        self, project_id: str, fingerprint: str, *, limit: int = 20
    ) -> list[Execution]:
        with self._read() as conn:
            rows = conn.execute(
                select(executions)
                .where(
                    executions.c.project_id == project_id,
                    executions.c.fingerprint == fingerprint,
                    executions.c.status == Status.COMPLETE.value,
                )
                .order_by(executions.c.counter.desc())
                .limit(limit)
            ).all()
            return self._hydrate(conn, rows)

    @translated
    def get_executions(self, project_id: str, ids: Iterable[str]) -> list[Execution]:
        wanted = list(dict.fromkeys(ids))
        found: dict[str, Row[Any]] = {}
        with self._read() as conn:
            for chunk in chunks(wanted):
                for row in conn.execute(select(executions).where(executions.c.id.in_(chunk))):
                    if row.project_id == project_id:
                        found[row.id] = row
            return self._hydrate(conn, [found[i] for i in wanted if i in found])

    @translated
    def execution_status(self, execution_id: str) -> tuple[Status, bool]:
        with self._read() as conn:
            row = conn.execute(
                select(executions.c.status, executions.c.stop_requested)
                .where(executions.c.id == execution_id)
            ).first()
        if row is None:
            raise no_execution(execution_id)
        return Status(row.status), bool(row.stop_requested)

    @translated
    def get_execution(self, project_id: str, ref: str | int) -> Execution:
        with self._read() as conn:
            row = self._find_execution(conn, project_id, ref)
            return self._hydrate(conn, [row])[0]

    def _find_execution(self, conn: Connection, project_id: str, ref: str | int) -> Row[Any]:
        in_project = executions.c.project_id == project_id
        text_ref = str(ref).strip()
        counter: int | None = None
        if isinstance(ref, int) and not isinstance(ref, bool):
            counter = ref
        elif text_ref.startswith("#"):
            if not text_ref[1:].isdigit():
                raise NotFoundError(
                    f"no execution {text_ref}: a #number is an execution counter",
                    hint="use #12, 12, or an execution id (or its first 8 characters)",
                )
            counter = int(text_ref[1:])
        elif text_ref.isdigit():
            counter = int(text_ref)
        if counter is not None:
            row = conn.execute(
                select(executions).where(in_project, executions.c.counter == counter)
            ).first()
            if row is not None:
                return row
            # An all-digit string may still be an id prefix; a #number or int may not.
            if isinstance(ref, int) or text_ref.startswith("#") or len(text_ref) < MIN_PREFIX:
                raise NotFoundError(
                    f"no execution #{counter} in this project",
                    hint="`cairn ls` lists the executions",
                )
        prefix = text_ref.lower()
        if len(prefix) < MIN_PREFIX:
            raise NotFoundError(
                f"no execution {text_ref!r}: an id prefix needs at least {MIN_PREFIX} characters",
                hint="use the #counter, or more characters of the execution id",
            )
        rows = queries.rows_by_id_prefix(conn, executions, project_id, prefix, at_most=11)
        if not rows:
            raise NotFoundError(
                f"no execution matches {text_ref!r} in this project",
                hint="`cairn ls` lists the executions",
            )
        if len(rows) > 1:
            shown = ", ".join(f"#{r.counter} ({r.id})" for r in rows[:10])
            more = " and more" if len(rows) > 10 else ""
            raise NotFoundError(
                f"execution id prefix {text_ref!r} is ambiguous: it matches {shown}{more}",
                hint="give more characters of the id, or the #counter",
            )
        return rows[0]

    @translated
    def list_executions(
        self,
        project_id: str,
        *,
        step: str | None = None,
        statuses: Sequence[Status] | None = None,
        tag: str | None = None,
        sort: str | None = None,
        descending: bool = True,
        limit: int | None = None,
    ) -> list[Execution]:
        """See :meth:`MetadataStore.list_executions`; ties sort by counter, same direction.

        Sorting by ``metric:KEY`` walks the ``metric_latest(key, value)`` index in order
        and stops after ``limit`` matches, then (if the page is not full) adds the
        executions that lack the metric, by counter. A NaN latest value counts as missing.
        """
        if limit is not None and limit <= 0:
            return []
        where = queries.execution_filters(project_id, step, statuses, tag)
        with self._read() as conn:
            rows = queries.sorted_executions(conn, where, sort, descending, limit)
            return self._hydrate(conn, rows)

    @translated
    def count_executions(self, project_id: str) -> int:
        with self._read() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(executions)
                    .where(executions.c.project_id == project_id)
                ).scalar_one()
            )

    @translated
    def transition(
        self,
        execution_id: str,
        to: Status,
        *,
        expect: Iterable[Status] | None = None,
        **fields: Any,
    ) -> bool:
        unknown = set(fields) - TRANSITION_FIELDS
        if unknown:
            raise TypeError(
                f"transition() cannot set {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(sorted(TRANSITION_FIELDS))}"
            )
        for name, value in fields.items():
            convert.ensure_aware(name, value)
        conditions = [executions.c.id == execution_id, executions.c.status.not_in(_FINAL)]
        if expect is not None:
            conditions.append(executions.c.status.in_([Status(s).value for s in expect]))
        values = dict(fields, status=Status(to).value)
        with self._write() as conn:
            if "started_at" in fields or "ended_at" in fields:
                values["duration"] = self._duration_after(conn, execution_id, fields)
            changed = conn.execute(update(executions).where(*conditions).values(values)).rowcount
            if changed == 0:
                self._require_execution(conn, execution_id)
        return changed == 1

    def _duration_after(
        self, conn: Connection, execution_id: str, fields: dict[str, Any]
    ) -> float | None:
        """The stored duration once ``fields`` apply: end − start when both are known."""
        query = select(executions.c.started_at, executions.c.ended_at).where(
            executions.c.id == execution_id
        )
        if self.dialect == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise no_execution(execution_id)
        started = fields.get("started_at", row.started_at)
        ended = fields.get("ended_at", row.ended_at)
        if started is None or ended is None:
            return None
        return float((ended - started).total_seconds())

    @translated
    def request_stop(self, execution_id: str) -> None:
        with self._write() as conn:
            changed = conn.execute(
                update(executions)
                .where(executions.c.id == execution_id)
                .values(stop_requested=True)
            ).rowcount
        if changed == 0:
            raise no_execution(execution_id)

    @translated
    def allocate(
        self,
        execution_id: str,
        *,
        host: str,
        capacity: Resources,
        gpu_ids: Sequence[int],
    ) -> Allocation | None:
        """See :meth:`MetadataStore.allocate`.

        GPUs are the indices in ``gpu_ids`` not held by an active execution on ``host``
        (``capacity.gpus`` is not consulted). ``capacity.memory_mb`` ≤ 0 means memory is
        not limited. An execution that is not ``queued`` (e.g. stopped meanwhile) is not
        allocated: returns ``None``.

        The queue's order holds: the local executions queued for ``host`` (waited on by a
        process there, or in the shared queue of the same project) are walked in
        :data:`QUEUE_ORDER`, each taking what is free if it fits; this one starts only if
        it still fits after those ahead of it. One that does not fit does not hold up
        those behind it (backfill), so a small job never waits behind a big one that
        cannot start yet.
        """
        with self._write() as conn:
            if self.dialect == "postgresql":
                # One allocator at a time across processes; released at commit.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_ALLOCATE_LOCK})
            row = conn.execute(
                select(executions.c.status, executions.c.project_id).where(
                    executions.c.id == execution_id
                )
            ).first()
            if row is None:
                raise no_execution(execution_id)
            if row.status != Status.QUEUED.value:
                return None
            free_cpus, free_memory = capacity.cpus, capacity.memory_mb
            held: set[int] = set()
            for active in conn.execute(
                select(executions.c.resources, executions.c.gpu_ids).where(
                    executions.c.status.in_(_ACTIVE), executions.c.host == host
                )
            ):
                res = Resources.from_dict(active.resources)
                free_cpus -= res.cpus
                free_memory -= res.memory_mb
                held.update(active.gpu_ids or ())
            free_gpus = [g for g in gpu_ids if g not in held]
            waiting = conn.execute(
                select(executions.c.id, executions.c.resources)
                .where(
                    executions.c.status == Status.QUEUED.value,
                    executions.c.backend == "local",
                    (executions.c.host == host)
                    | (executions.c.host.is_(None) & (executions.c.project_id == row.project_id)),
                )
                .order_by(*QUEUE_ORDER)
            )
            granted: tuple[int, ...] | None = None
            for ahead in waiting:
                need = Resources.from_dict(ahead.resources)
                fits = (
                    need.cpus <= free_cpus + 1e-9
                    and (capacity.memory_mb <= 0 or need.memory_mb <= free_memory)
                    and need.gpus <= len(free_gpus)
                )
                if ahead.id == execution_id:
                    if fits:
                        granted = tuple(free_gpus[: need.gpus])
                    break
                if fits:  # it goes first: what it takes is not free for this one
                    free_cpus -= need.cpus
                    free_memory -= need.memory_mb
                    free_gpus = free_gpus[need.gpus:]
            if granted is None:
                return None
            conn.execute(
                update(executions)
                .where(executions.c.id == execution_id)
                .values(status=Status.STARTING.value, host=host, gpu_ids=list(granted))
            )
        return Allocation(gpu_ids=granted)

    @translated
    def queue(self, *, project_id: str | None = None) -> list[Execution]:
        """See :meth:`MetadataStore.queue`."""
        where = [executions.c.status == Status.QUEUED.value]
        if project_id is not None:
            where.append(executions.c.project_id == project_id)
        with self._read() as conn:
            rows = conn.execute(select(executions).where(*where).order_by(*QUEUE_ORDER)).all()
            return self._hydrate(conn, rows)

    @translated
    def add_tags(self, execution_id: str, tags: Iterable[str]) -> None:
        wanted = sorted(set(tags))
        with self._write() as conn:
            self._require_execution(conn, execution_id)
            self._upsert(
                conn,
                execution_tags,
                [{"execution_id": execution_id, "tag": tag} for tag in wanted],
                keys=("execution_id", "tag"),
            )

    @translated
    def remove_tags(self, execution_id: str, tags: Iterable[str]) -> None:
        unwanted = sorted(set(tags))
        with self._write() as conn:
            self._require_execution(conn, execution_id)
            if unwanted:
                conn.execute(
                    delete(execution_tags).where(
                        execution_tags.c.execution_id == execution_id,
                        execution_tags.c.tag.in_(unwanted),
                    )
                )

    # -- metrics ----------------------------------------------------------------------
    @translated
    def add_metrics(self, execution_id: str, points: Sequence[MetricPoint]) -> None:
        """See :meth:`MetadataStore.add_metrics`.

        The store numbers points in arrival order (``seq`` continues from the last stored
        point; the ``seq`` given on the points is ignored). NaN values are kept as NaN.
        A key's latest value replaces any non-numeric metadata value of that key.
        """
        if not points:
            return
        with self._write() as conn:
            self._require_execution(conn, execution_id, lock=True)
            last = conn.execute(
                select(func.max(metric_points.c.seq)).where(
                    metric_points.c.execution_id == execution_id
                )
            ).scalar()
            seq = 0 if last is None else last + 1
            latest: dict[str, tuple[Any, ...]]
            if self.dialect == "sqlite" and _numbered_from(points, seq):
                # The ingestion path numbers points itself: insert them as they are.
                self._insert_numbered_points(conn, execution_id, points)
                latest = {}
                for point in points:
                    latest[point.key] = (execution_id, point.seq, point.key, point.step,
                                         point.value, point.time)
            else:
                rows: list[tuple[Any, ...]] = []
                latest = {}
                nan_to_null = convert.nan_to_null
                for point in points:
                    row = (
                        execution_id,
                        seq,
                        point.key,
                        point.step,
                        nan_to_null(point.value),
                        point.time,
                    )
                    rows.append(row)
                    latest[point.key] = row
                    seq += 1
                self._insert_points(conn, rows)
            self._upsert(
                conn,
                metric_latest,
                [
                    {
                        "execution_id": execution_id,
                        "key": key,
                        "value": r[4],
                        "step": r[3],
                        "time": r[5],
                    }
                    for key, r in latest.items()
                ],
                keys=("execution_id", "key"),
                update_columns=("value", "step", "time"),
            )
            conn.execute(
                delete(metadata_latest).where(
                    metadata_latest.c.execution_id == execution_id,
                    metadata_latest.c.key.in_(list(latest)),
                )
            )

    def _insert_numbered_points(
        self, conn: Connection, execution_id: str, points: Sequence[MetricPoint]
    ) -> None:
        """SQLite: executemany straight over the points (key, value, step, time, seq)."""
        literal = "'" + execution_id.replace("'", "''") + "'"
        conn.exec_driver_sql(
            "INSERT INTO metric_points (key, value, step, time, seq, execution_id) "
            f"VALUES (?, ?, ?, ?, ?, {literal})",
            points,  # type: ignore[arg-type]
        )

    def _insert_points(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        """Bulk-insert metric point tuples at driver speed (SQLAlchemy Core is ~10× slower)."""
        columns = "execution_id, seq, key, step, value, time"
        if self.dialect == "sqlite":
            # Plain str/int/float values need no bind processing: straight to executemany.
            conn.exec_driver_sql(
                f"INSERT INTO metric_points ({columns}) VALUES (?, ?, ?, ?, ?, ?)", rows
            )
            return
        # PostgreSQL: COPY on the transaction's own psycopg connection.
        driver_connection: Any = conn.connection.driver_connection
        with (
            driver_connection.cursor() as cursor,
            cursor.copy(f"COPY metric_points ({columns}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)

    @translated
    def set_metadata(self, execution_id: str, values: dict[str, Any]) -> None:
        if not values:
            return
        with self._write() as conn:
            self._require_execution(conn, execution_id)
            self._upsert(
                conn,
                metadata_latest,
                [
                    {"execution_id": execution_id, "key": key, "value": value}
                    for key, value in values.items()
                ],
                keys=("execution_id", "key"),
                update_columns=("value",),
            )
            conn.execute(
                delete(metric_latest).where(
                    metric_latest.c.execution_id == execution_id,
                    metric_latest.c.key.in_(list(values)),
                )
            )

    @translated
    def get_metrics(self, execution_id: str, *, after_seq: int | None = None
                    ) -> list[MetricPoint]:
        query = select(metric_points).where(metric_points.c.execution_id == execution_id)
        if after_seq is not None:
            query = query.where(metric_points.c.seq > after_seq)
        with self._read() as conn:
            rows = conn.execute(query.order_by(metric_points.c.seq)).all()
            if not rows:
                self._require_execution(conn, execution_id)
        return [convert.metric_point(r) for r in rows]


def _forget_connections_after_fork(engine: Engine) -> None:
    """A forked child must not use its parent's pooled connections (SQLite file locks and
    PostgreSQL sockets would be shared): it drops them, unclosed, and opens its own."""
    ref = weakref.ref(engine)

    def after_fork_in_child() -> None:
        forked = ref()
        if forked is not None:
            forked.dispose(close=False)

    os.register_at_fork(after_in_child=after_fork_in_child)


def _numbered_from(points: Sequence[MetricPoint], first: int) -> bool:
    """Whether the points are numbered first, first + 1, ... and hold no NaN."""
    expected = first
    for point in points:
        if point.seq != expected or point.value != point.value:
            return False
        expected += 1
    return True
