"""Pipelines and sweeps (flows and their nodes), execution fingerprints and code reads for
reuse, and the cluster node an execution ran on.

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(36)
DIGEST = sa.String(64)


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("executions", sa.Column("fingerprint", DIGEST, nullable=True))
    op.add_column("executions", sa.Column("code_reads", sa.JSON, nullable=True))
    op.add_column("executions", sa.Column("node", sa.String(255), nullable=True))
    op.create_index("ix_executions_fingerprint", "executions", ["project_id", "fingerprint"])
    op.create_table(
        "flows",
        sa.Column("id", ID, primary_key=True),
        sa.Column(
            "project_id", ID, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("counter", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("started_at", _utc(), nullable=True),
        sa.Column("ended_at", _utc(), nullable=True),
        sa.Column("status_detail", sa.Text, nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("stop_requested", sa.Boolean, nullable=False),
        sa.UniqueConstraint("project_id", "kind", "counter", name="uq_flows_counter"),
    )
    op.create_table(
        "flow_nodes",
        sa.Column(
            "flow_id", ID, sa.ForeignKey("flows.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column(
            "execution_id", ID, sa.ForeignKey("executions.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("child_flow_id", ID, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("started_at", _utc(), nullable=True),
        sa.Column("ended_at", _utc(), nullable=True),
    )
    op.create_index("ix_flow_nodes_execution", "flow_nodes", ["execution_id"])


def downgrade() -> None:
    op.drop_table("flow_nodes")
    op.drop_table("flows")
    op.drop_index("ix_executions_fingerprint", "executions")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("fingerprint")
        batch.drop_column("code_reads")
        batch.drop_column("node")
