"""The shared queue: an execution's priority and backend, and the execution an automatic
restart continues.

Revision ID: 0004
Revises: 0003
Create Date: 2025-04-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("priority", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("backend", sa.String(16), nullable=False,
                                   server_default="local"))
        batch.add_column(sa.Column("restart_of", sa.String(36), nullable=True))
    op.create_index("ix_executions_queue", "executions", ["status", "priority", "queued_at"])


def downgrade() -> None:
    op.drop_index("ix_executions_queue", "executions")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("restart_of")
        batch.drop_column("backend")
        batch.drop_column("priority")
