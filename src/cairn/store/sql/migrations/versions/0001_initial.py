"""Initial schema: projects, executions, datums, metrics.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(36)
DIGEST = sa.String(64)


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", ID, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "counters",
        sa.Column(
            "project_id",
            ID,
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("value", sa.Integer, nullable=False),
    )
    op.create_table(
        "executions",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "project_id", ID, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("counter", sa.Integer, nullable=False),
        sa.Column("step", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("command", sa.JSON, nullable=False),
        sa.Column("code", sa.JSON, nullable=True),
        sa.Column("environment", sa.JSON, nullable=False),
        sa.Column("step_config", sa.JSON, nullable=False),
        sa.Column("resources", sa.JSON, nullable=False),
        sa.Column("title", sa.Text, nullable=True),
        sa.Column("rerun_of", ID, nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("status_detail", sa.Text, nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("queued_at", _utc(), nullable=True),
        sa.Column("started_at", _utc(), nullable=True),
        sa.Column("ended_at", _utc(), nullable=True),
        sa.Column("duration", sa.Float, nullable=True),
        sa.Column("time_limit", sa.Float, nullable=True),
        sa.Column("no_output_timeout", sa.Float, nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("gpu_ids", sa.JSON, nullable=False),
        sa.Column("stop_requested", sa.Boolean, nullable=False),
        sa.Column("log_digest", DIGEST, nullable=True),
        sa.UniqueConstraint("project_id", "counter", name="uq_executions_project_counter"),
    )
    op.create_index("ix_executions_project_step", "executions", ["project_id", "step", "counter"])
    op.create_index(
        "ix_executions_project_status", "executions", ["project_id", "status", "counter"]
    )
    op.create_index("ix_executions_project_created", "executions", ["project_id", "created_at"])
    op.create_index("ix_executions_project_duration", "executions", ["project_id", "duration"])
    op.create_index("ix_executions_status_host", "executions", ["status", "host"])

    op.create_table(
        "execution_inputs",
        sa.Column(
            "execution_id",
            ID,
            sa.ForeignKey("executions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("input_name", sa.String(255), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("datum_id", sa.String(255), nullable=True),
    )
    op.create_table(
        "execution_tags",
        sa.Column(
            "execution_id",
            ID,
            sa.ForeignKey("executions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("tag", sa.String(255), primary_key=True),
    )
    op.create_index("ix_execution_tags_tag", "execution_tags", ["tag", "execution_id"])

    op.create_table(
        "datums",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column(
            "project_id", ID, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column(
            "execution_id",
            ID,
            sa.ForeignKey("executions.id", ondelete="SET NULL"),
            nullable=True,
        ),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("metadata", sa.JSON, nullable=False),
    )
    op.create_index("ix_datums_project_name", "datums", ["project_id", "name"])
    op.create_index("ix_datums_execution", "datums", ["execution_id"])
    op.create_table(
        "datum_tags",
        sa.Column(
            "datum_id",
            sa.String(255),
            sa.ForeignKey("datums.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("tag", sa.String(255), primary_key=True),
    )

    op.create_table(
        "metric_points",
        sa.Column(
            "execution_id",
            ID,
            sa.ForeignKey("executions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("step", sa.BigInteger, nullable=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("time", sa.Float, nullable=False),
        # One b-tree keyed (execution_id, seq) instead of a rowid table plus an index.
        sqlite_with_rowid=False,
    )
    op.create_table(
        "metric_latest",
        sa.Column(
            "execution_id",
            ID,
            sa.ForeignKey("executions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("step", sa.BigInteger, nullable=True),
        sa.Column("time", sa.Float, nullable=False),
    )
    op.create_index("ix_metric_latest_key_value", "metric_latest", ["key", "value", "execution_id"])
    op.create_table(
        "metadata_latest",
        sa.Column(
            "execution_id",
            ID,
            sa.ForeignKey("executions.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("value", sa.JSON, nullable=True),
    )


def downgrade() -> None:
    for table in (
        "metadata_latest",
        "metric_latest",
        "metric_points",
        "datum_tags",
        "datums",
        "execution_tags",
        "execution_inputs",
        "executions",
        "counters",
        "projects",
    ):
        op.drop_table(table)
