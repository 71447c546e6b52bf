"""SQLAlchemy tables of the metadata store.

Only generic column types are used, so the same models serve SQLite and PostgreSQL. The
schema is created by the Alembic migrations in ``migrations/versions`` (never by
``metadata.create_all``); a test checks that the migrated schema matches these models.

Rows never leave :mod:`cairn.store.sql`: ``store.py`` converts them to entities.

Index choices, by the queries they serve:

- ``executions(project_id, counter)`` (unique): list a project newest-first, look up ``#12``;
- ``executions(project_id, step, counter)`` / ``(project_id, status, counter)``: filters;
- ``executions(project_id, created_at)`` / ``(project_id, duration)``: those sorts;
- ``executions(status, host)``: what is active on a host (allocation);
- ``execution_tags(tag, execution_id)``: the tag filter;
- ``metric_latest(key, value, execution_id)``: sort by a metric by walking this index in
  order and stopping after the page (covering, so no table lookups until the join);
- ``metric_points`` is keyed ``(execution_id, seq)`` and stored WITHOUT ROWID on SQLite so
  appending a point writes one b-tree, not two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

ID = String(36)
DIGEST = String(64)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    Values are stored as UTC (SQLite keeps naive text, PostgreSQL ``timestamptz``) and
    always come back aware, in UTC. Naive datetimes are refused: they are a bug upstream.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: cairn stores timezone-aware UTC times")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # SQLite stores text; a fixed naive UTC form keeps text order = time order.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class ProjectRow(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)


class CounterRow(Base):
    """The last execution counter handed out in a project (bumped atomically)."""

    __tablename__ = "counters"

    project_id: Mapped[str] = mapped_column(
        ID, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    value: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class ExecutionRow(Base):
    __tablename__ = "executions"
    __table_args__ = (
        UniqueConstraint("project_id", "counter", name="uq_executions_project_counter"),
        Index("ix_executions_project_step", "project_id", "step", "counter"),
        Index("ix_executions_project_status", "project_id", "status", "counter"),
        Index("ix_executions_project_created", "project_id", "created_at"),
        Index("ix_executions_project_duration", "project_id", "duration"),
        Index("ix_executions_status_host", "status", "host"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    project_id: Mapped[str] = mapped_column(
        ID, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False
    )
    counter: Mapped[int] = mapped_column(Integer, nullable=False)
    step: Mapped[str] = mapped_column(String(255), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    parameters: Mapped[Any] = mapped_column(JSON, nullable=False)
    command: Mapped[Any] = mapped_column(JSON, nullable=False)
    code: Mapped[Any] = mapped_column(JSON, nullable=True)
    environment: Mapped[Any] = mapped_column(JSON, nullable=False)
    step_config: Mapped[Any] = mapped_column(JSON, nullable=False)
    resources: Mapped[Any] = mapped_column(JSON, nullable=False)
    title: Mapped[str | None] = mapped_column(Text, nullable=True)
    rerun_of: Mapped[str | None] = mapped_column(ID, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # Seconds from started_at to ended_at, kept when both are known so that sorting by
    # duration walks an index; NULL while running (computed at query time) or unstarted.
    duration: Mapped[float | None] = mapped_column(Float, nullable=True)
    time_limit: Mapped[float | None] = mapped_column(Float, nullable=True)
    no_output_timeout: Mapped[float | None] = mapped_column(Float, nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gpu_ids: Mapped[Any] = mapped_column(JSON, nullable=False)
    stop_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    log_digest: Mapped[str | None] = mapped_column(DIGEST, nullable=True)


class ExecutionInputRow(Base):
    __tablename__ = "execution_inputs"

    execution_id: Mapped[str] = mapped_column(
        ID, ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    input_name: Mapped[str] = mapped_column(String(255), nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    uri: Mapped[str] = mapped_column(Text, nullable=False)
    digest: Mapped[str] = mapped_column(DIGEST, nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    datum_id: Mapped[str | None] = mapped_column(String(255), nullable=True)


class ExecutionTagRow(Base):
    __tablename__ = "execution_tags"
    __table_args__ = (Index("ix_execution_tags_tag", "tag", "execution_id"),)

    execution_id: Mapped[str] = mapped_column(
        ID, ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(255), primary_key=True)


class DatumRow(Base):
    __tablename__ = "datums"
    __table_args__ = (
        Index("ix_datums_project_name", "project_id", "name"),
        Index("ix_datums_execution", "execution_id"),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    project_id: Mapped[str] = mapped_column(
        ID, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(Text, nullable=False)
    digest: Mapped[str] = mapped_column(DIGEST, nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    execution_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("executions.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    # ``metadata`` is reserved on declarative classes; the column keeps the plain name.
    meta: Mapped[Any] = mapped_column("metadata", JSON, nullable=False)


class DatumTagRow(Base):
    __tablename__ = "datum_tags"

    datum_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("datums.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(255), primary_key=True)


class MetricPointRow(Base):
    """Every metric point; ``value`` NULL stands for NaN (SQLite cannot store NaN)."""

    __tablename__ = "metric_points"
    __table_args__ = ({"sqlite_with_rowid": False},)

    execution_id: Mapped[str] = mapped_column(
        ID, ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    key: Mapped[str] = mapped_column(String(255), nullable=False)
    step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    time: Mapped[float] = mapped_column(Float, nullable=False)


class MetricLatestRow(Base):
    """The latest numeric value per (execution, key); NULL value stands for NaN."""

    __tablename__ = "metric_latest"
    __table_args__ = (Index("ix_metric_latest_key_value", "key", "value", "execution_id"),)

    execution_id: Mapped[str] = mapped_column(
        ID, ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    step: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    time: Mapped[float] = mapped_column(Float, nullable=False)


class MetadataLatestRow(Base):
    """The latest non-numeric metadata value per (execution, key), as JSON."""

    __tablename__ = "metadata_latest"

    execution_id: Mapped[str] = mapped_column(
        ID, ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)


metadata = Base.metadata

# Core handles on the tables, for the store's bulk paths.
projects = cast(Table, ProjectRow.__table__)
counters = cast(Table, CounterRow.__table__)
executions = cast(Table, ExecutionRow.__table__)
execution_inputs = cast(Table, ExecutionInputRow.__table__)
execution_tags = cast(Table, ExecutionTagRow.__table__)
datums = cast(Table, DatumRow.__table__)
datum_tags = cast(Table, DatumTagRow.__table__)
metric_points = cast(Table, MetricPointRow.__table__)
metric_latest = cast(Table, MetricLatestRow.__table__)
metadata_latest = cast(Table, MetadataLatestRow.__table__)

CAIRN_TABLES = frozenset(metadata.tables)
"""Names of every table of the schema (without ``alembic_version``)."""
