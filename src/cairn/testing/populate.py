"""Fill a metadata store with synthetic executions, fast, for benchmarks and perf tests.

On :class:`~cairn.store.sql.store.SqlMetadataStore` the rows are bulk-inserted directly
(100,000 executions in a few seconds); any other store goes through its public methods.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cairn.entities import MetricPoint, Status
from cairn.store.base import MetadataStore, NewExecution

STEPS = ("train", "evaluate", "preprocess")
_BATCH = 50_000


def populate(
    store: MetadataStore,
    project_id: str,
    n: int,
    metrics: Sequence[str] = ("accuracy", "loss"),
    *,
    seed: int = 0,
    points: bool = False,
) -> None:
    """Add ``n`` completed executions to ``project_id``, each with one value per metric.

    Counters continue from the project's last one. Steps cycle through :data:`STEPS`;
    every tenth execution is tagged ``"sweep"``. Metric values are uniform in [0, 1),
    reproducible for a given ``seed``. Only the latest values (what listing and sorting
    read) are written unless ``points`` is true, which also stores each value as a metric
    point (for :meth:`~cairn.store.base.MetadataStore.get_metrics`).
    """
    from cairn.store.sql.store import SqlMetadataStore

    if isinstance(store, SqlMetadataStore):
        _populate_sql(store, project_id, n, metrics, random.Random(seed), points)
    else:
        _populate_generic(store, project_id, n, metrics, random.Random(seed))


def _populate_generic(
    store: MetadataStore,
    project_id: str,
    n: int,
    metrics: Sequence[str],
    rng: random.Random,
) -> None:
    for i in range(n):
        execution = store.create_execution(
            NewExecution(
                project_id=project_id,
                step=STEPS[i % len(STEPS)],
                parameters={"lr": rng.random()},
                command=["python", "train.py"],
                inputs=[],
                code=None,
                environment={},
                step_config={},
                tags=("sweep",) if i % 10 == 0 else (),
            )
        )
        now = datetime.now(UTC)
        store.transition(execution.id, Status.COMPLETE, started_at=now, ended_at=now, exit_code=0)
        store.add_metrics(
            execution.id, [MetricPoint(key, rng.random(), 1, now.timestamp()) for key in metrics]
        )


def _populate_sql(
    store: Any,
    project_id: str,
    n: int,
    metrics: Sequence[str],
    rng: random.Random,
    points: bool,
) -> None:
    from sqlalchemy import select, update

    from cairn.store.sql import orm

    with store._write() as conn:  # the store's write transaction (holds the write lock)
        first = (
            conn.execute(
                select(orm.counters.c.value).where(orm.counters.c.project_id == project_id)
            ).scalar_one()
            + 1
        )
        conn.execute(
            update(orm.counters)
            .where(orm.counters.c.project_id == project_id)
            .values(value=first + n - 1)
        )
        sqlite = store.dialect == "sqlite"
        for offset in range(0, n, _BATCH):
            batch = [
                _synthetic(rng, first, i, metrics) for i in range(offset, min(n, offset + _BATCH))
            ]
            tables = _rows(project_id, batch, metrics, points, sqlite_text=sqlite)
            for table, (columns, rows) in tables.items():
                if rows:
                    (_executemany if sqlite else _copy)(conn, table, columns, rows)


_START = datetime(2025, 1, 1, tzinfo=UTC)


def _synthetic(
    rng: random.Random, first: int, i: int, metrics: Sequence[str]
) -> tuple[str, int, str, float, datetime, datetime, list[float]]:
    """One execution: id, counter, step, lr, created, ended, metric values."""
    created = _START + timedelta(seconds=i)
    return (
        str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        first + i,
        STEPS[i % len(STEPS)],
        round(rng.random(), 6),
        created,
        created + timedelta(seconds=rng.randint(1, 3600)),
        [rng.random() for _ in metrics],
    )


_EXECUTION_COLUMNS = (
    "id", "project_id", "counter", "step", "status", "parameters", "command", "code",
    "environment", "step_config", "resources", "gpu_ids", "stop_requested", "exit_code",
    "created_at", "queued_at", "started_at", "ended_at", "duration",
)  # fmt: skip


def _rows(
    project_id: str,
    batch: list[Any],
    metrics: Sequence[str],
    with_points: bool,
    *,
    sqlite_text: bool,
) -> dict[str, tuple[Sequence[str], list[tuple[Any, ...]]]]:
    """Driver-ready rows per table, serialized as SQLAlchemy would store them.

    Going around SQLAlchemy's per-row bind processing is what makes this fast; with
    ``sqlite_text`` datetimes become SQLAlchemy's SQLite text form (naive UTC).
    """
    command = json.dumps(["python", "train.py"])
    resources = json.dumps({"cpus": 1.0, "memory_mb": 0, "gpus": 0})

    def when(value: datetime) -> Any:
        if sqlite_text:
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")
        return value

    executions = []
    tags = []
    latest = []
    points = []
    for execution_id, counter, step, lr, created, ended, values in batch:
        created_at = when(created)
        executions.append(
            (execution_id, project_id, counter, step, "complete", f'{{"lr": {lr}}}', command,
             None, "{}", "{}", resources, "[]", False, 0, created_at, created_at, created_at,
             when(ended), (ended - created).total_seconds())
        )  # fmt: skip
        if counter % 10 == 1:
            tags.append((execution_id, "sweep"))
        time = created.timestamp() + 1
        for seq, (key, value) in enumerate(zip(metrics, values)):
            latest.append((execution_id, key, value, 1, time))
            if with_points:
                points.append((execution_id, seq, key, value, 1, time))
    # In key order, each b-tree page is written once instead of being revisited at random.
    latest.sort()
    points.sort()
    return {
        "executions": (_EXECUTION_COLUMNS, executions),
        "execution_tags": (("execution_id", "tag"), tags),
        "metric_latest": (("execution_id", "key", "value", "step", "time"), latest),
        "metric_points": (("execution_id", "seq", "key", "value", "step", "time"), points),
    }


def _executemany(conn: Any, table: str, columns: Sequence[str], rows: list[Any]) -> None:
    marks = ", ".join("?" for _ in columns)
    conn.exec_driver_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


def _copy(conn: Any, table: str, columns: Sequence[str], rows: list[Any]) -> None:
    """PostgreSQL ``COPY`` on the transaction's own psycopg connection."""
    with (
        conn.connection.driver_connection.cursor() as cursor,
        cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
