"""SQLAlchemy tables of the metadata store.

Only generic column types are used, so the same models serve SQLite and PostgreSQL. The
schema is owned by the Alembic migrations in ``migrations/versions``; a test checks that
the migrated schema matches these models. A new SQLite database is created from these
models directly (``schema.upgrade``), and a test checks that it equals a migrated one.

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
  appending a point writes one b-tree, not two;
- ``execution_inputs(datum_id)``: who consumed a datum (lineage);
- ``execution_inputs(uri_head)``: who consumed anything under a URI prefix
  (``dataset://images/v3``); ``uri_head`` is the URI's first :data:`URI_HEAD` characters,
  because a B-tree entry has a size limit on PostgreSQL and URLs can be long. On
  PostgreSQL it uses ``text_pattern_ops`` so ``LIKE 'prefix%'`` walks it whatever the
  database's collation;
- ``datums(digest)``: which datums hold a blob;
- ``datum_tags(tag, datum_id)``: the tag filter;
- ``dataset_versions(project_id, dataset, created_at)``: a dataset's versions in order,
  its latest one; ``(project_id, dataset, version)`` unique: versions are immutable;
- ``dataset_versions(execution_id)``: versions an execution made;
- ``executions(project_id, fingerprint)``: the result cache's lookup;
- ``flows(project_id, kind, counter)`` (unique): pipelines and sweeps, newest first, ``#3``;
  ``flow_nodes`` keyed ``(flow_id, name)``, ``flow_nodes(execution_id)``: which flow ran one;
- ``aliases`` keyed ``(project_id, name)``; ``alias_events(project_id, name, id)``: history.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

ID = String(36)
DIGEST = String(64)
NAME = String(128)  # dataset, version and alias names

URI_HEAD = 512
"""Characters of an input URI kept in the indexed ``execution_inputs.uri_head``."""


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


# Plain Core tables: the ORM (declarative classes) would add ~0.1 s to every `cairn run`.
metadata = MetaData()

projects = Table(
    "projects", metadata,
    Column("id", ID, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
)

# The last execution counter handed out in a project (bumped atomically).
counters = Table(
    "counters", metadata,
    Column("project_id", ID, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("value", Integer, nullable=False, default=0),
)

executions = Table(
    "executions", metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("counter", Integer, nullable=False),
    Column("step", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("parameters", JSON, nullable=False),
    Column("command", JSON, nullable=False),
    Column("code", JSON, nullable=True),
    Column("environment", JSON, nullable=False),
    Column("step_config", JSON, nullable=False),
    Column("resources", JSON, nullable=False),
    Column("title", Text, nullable=True),
    Column("rerun_of", ID, nullable=True),
    Column("exit_code", Integer, nullable=True),
    Column("status_detail", Text, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("queued_at", UtcDateTime(), nullable=True),
    Column("started_at", UtcDateTime(), nullable=True),
    Column("ended_at", UtcDateTime(), nullable=True),
    # Seconds from started_at to ended_at, kept when both are known so that sorting by
    # duration walks an index; NULL while running (computed at query time) or unstarted.
    Column("duration", Float, nullable=True),
    Column("time_limit", Float, nullable=True),
    Column("no_output_timeout", Float, nullable=True),
    Column("host", String(255), nullable=True),
    Column("pid", Integer, nullable=True),
    Column("gpu_ids", JSON, nullable=False),
    Column("stop_requested", Boolean, nullable=False, default=False),
    Column("log_digest", DIGEST, nullable=True),
    Column("fingerprint", DIGEST, nullable=True),
    Column("code_reads", JSON, nullable=True),  # {path: digest} the step read; NULL: untraced
    Column("node", String(255), nullable=True),  # the cluster node (Ray) it ran on
    # The queue: higher priority first, then first queued first; `backend` says which
    # capacity it waits for ("local": a host's CPUs/GPUs; "ray": a cluster environment).
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("backend", String(16), nullable=False, server_default="local"),
    Column("restart_of", ID, nullable=True),  # the crashed execution an autorestart continues
    UniqueConstraint("project_id", "counter", name="uq_executions_project_counter"),
    Index("ix_executions_project_step", "project_id", "step", "counter"),
    Index("ix_executions_project_status", "project_id", "status", "counter"),
    Index("ix_executions_project_created", "project_id", "created_at"),
    Index("ix_executions_project_duration", "project_id", "duration"),
    Index("ix_executions_status_host", "status", "host"),
    Index("ix_executions_fingerprint", "project_id", "fingerprint"),
    Index("ix_executions_queue", "status", "priority", "queued_at"),
)

execution_inputs = Table(
    "execution_inputs", metadata,
    Column("execution_id", ID, ForeignKey("executions.id", ondelete="CASCADE"),
           primary_key=True),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("input_name", String(255), nullable=False),
    Column("name", Text, nullable=False),
    Column("uri", Text, nullable=False),
    Column("digest", DIGEST, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("datum_id", String(255), nullable=True),
    Column("uri_head", Text, nullable=False),  # uri[:URI_HEAD], indexed for prefix queries
    Index("ix_execution_inputs_datum", "datum_id"),
    # On PostgreSQL the migration gives this index the text_pattern_ops operator class
    # (prefix LIKE queries use it). It is left out here: naming a PostgreSQL option in a
    # model imports SQLAlchemy's PostgreSQL dialects (about 0.2 s) on every command, also
    # on SQLite, and alembic's schema comparison does not look at operator classes.
    Index("ix_execution_inputs_uri_head", "uri_head"),
)

execution_tags = Table(
    "execution_tags", metadata,
    Column("execution_id", ID, ForeignKey("executions.id", ondelete="CASCADE"),
           primary_key=True),
    Column("tag", String(255), primary_key=True),
    Index("ix_execution_tags_tag", "tag", "execution_id"),
)

datums = Table(
    "datums", metadata,
    Column("id", String(255), primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("digest", DIGEST, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("execution_id", ID, ForeignKey("executions.id", ondelete="SET NULL"), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("metadata", JSON, nullable=False),
    Index("ix_datums_project_name", "project_id", "name"),
    Index("ix_datums_execution", "execution_id"),
    Index("ix_datums_digest", "digest"),
)

datum_tags = Table(
    "datum_tags", metadata,
    Column("datum_id", String(255), ForeignKey("datums.id", ondelete="CASCADE"),
           primary_key=True),
    Column("tag", String(255), primary_key=True),
    Index("ix_datum_tags_tag", "tag", "datum_id"),
)

# A movable name for a datum (datum://NAME); every move is also kept in alias_events.
aliases = Table(
    "aliases", metadata,
    Column("project_id", ID, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("name", NAME, primary_key=True),
    Column("datum_id", String(255), ForeignKey("datums.id"), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("execution_id", ID, ForeignKey("executions.id", ondelete="SET NULL"), nullable=True),
    Index("ix_aliases_datum", "datum_id"),
)

# The history of every alias, in insertion order (``id``); kept when an alias is deleted.
alias_events = Table(
    "alias_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", ID, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("name", NAME, nullable=False),
    Column("datum_id", String(255), nullable=False),
    Column("previous_datum_id", String(255), nullable=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("execution_id", ID, nullable=True),
    Index("ix_alias_events_name", "project_id", "name", "id"),
)

# A dataset exists once it has had a version; its row is what creators of versions lock.
datasets = Table(
    "datasets", metadata,
    Column("project_id", ID, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("name", NAME, primary_key=True),
    Column("created_at", UtcDateTime(), nullable=False),
)

dataset_versions = Table(
    "dataset_versions", metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, nullable=False),
    Column("dataset", NAME, nullable=False),
    Column("version", NAME, nullable=False),
    Column("tree_digest", DIGEST, nullable=False),
    Column("file_count", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    # Strictly increasing within a dataset (see create_dataset_version): "latest" is the max.
    Column("created_at", UtcDateTime(), nullable=False),
    Column("source", String(32), nullable=False),
    Column("execution_id", ID, ForeignKey("executions.id", ondelete="SET NULL"), nullable=True),
    Column("from_version", Text, nullable=True),  # as given: "v2", "other/v1", ...
    Column("metadata", JSON, nullable=False),
    ForeignKeyConstraint(
        ["project_id", "dataset"], ["datasets.project_id", "datasets.name"],
        ondelete="CASCADE", name="fk_dataset_versions_dataset",
    ),
    UniqueConstraint("project_id", "dataset", "version", name="uq_dataset_versions_version"),
    Index("ix_dataset_versions_created", "project_id", "dataset", "created_at"),
    Index("ix_dataset_versions_execution", "execution_id"),
)

# Every metric point; ``value`` NULL stands for NaN (SQLite cannot store NaN).
metric_points = Table(
    "metric_points", metadata,
    Column("execution_id", ID, ForeignKey("executions.id", ondelete="CASCADE"),
           primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("key", String(255), nullable=False),
    Column("step", BigInteger, nullable=True),
    Column("value", Float, nullable=True),
    Column("time", Float, nullable=False),
    sqlite_with_rowid=False,
)

# The latest numeric value per (execution, key); NULL value stands for NaN.
metric_latest = Table(
    "metric_latest", metadata,
    Column("execution_id", ID, ForeignKey("executions.id", ondelete="CASCADE"),
           primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", Float, nullable=True),
    Column("step", BigInteger, nullable=True),
    Column("time", Float, nullable=False),
    Index("ix_metric_latest_key_value", "key", "value", "execution_id"),
)

# The latest non-numeric metadata value per (execution, key), as JSON.
metadata_latest = Table(
    "metadata_latest", metadata,
    Column("execution_id", ID, ForeignKey("executions.id", ondelete="CASCADE"),
           primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", JSON, nullable=True),
)

# Pipelines and sweeps ("flows"), numbered per project and kind.
flows = Table(
    "flows", metadata,
    Column("id", ID, primary_key=True),
    Column("project_id", ID, ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("counter", Integer, nullable=False),
    Column("name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("definition", JSON, nullable=False),
    Column("parameters", JSON, nullable=False),
    Column("options", JSON, nullable=False),
    Column("result", JSON, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("started_at", UtcDateTime(), nullable=True),
    Column("ended_at", UtcDateTime(), nullable=True),
    Column("status_detail", Text, nullable=True),
    Column("host", String(255), nullable=True),
    Column("pid", Integer, nullable=True),
    Column("stop_requested", Boolean, nullable=False, default=False),
    UniqueConstraint("project_id", "kind", "counter", name="uq_flows_counter"),
)

flow_nodes = Table(
    "flow_nodes", metadata,
    Column("flow_id", ID, ForeignKey("flows.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("position", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("execution_id", ID, ForeignKey("executions.id", ondelete="SET NULL"), nullable=True),
    Column("child_flow_id", ID, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("parameters", JSON, nullable=False),
    Column("value", Float, nullable=True),
    Column("detail", Text, nullable=True),
    Column("started_at", UtcDateTime(), nullable=True),
    Column("ended_at", UtcDateTime(), nullable=True),
    Index("ix_flow_nodes_execution", "execution_id"),
)

CAIRN_TABLES = frozenset(metadata.tables)
"""Names of every table of the schema (without ``alembic_version``)."""
