"""Data: datum aliases and their history, dataset versions, lineage and gc indexes.

Adds ``execution_inputs.uri_head`` (the first 512 characters of ``uri``, filled in for
existing rows) so that "who consumed dataset://images/v3" walks an index.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(36)
DIGEST = sa.String(64)
NAME = sa.String(128)
URI_HEAD = 512  # = cairn.store.sql.orm.URI_HEAD when this revision was written


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    # -- lineage: who consumed a datum, who consumed anything under a URI ----------------
    op.add_column("execution_inputs", sa.Column("uri_head", sa.Text, nullable=True))
    op.execute(f"UPDATE execution_inputs SET uri_head = substr(uri, 1, {URI_HEAD})")
    with op.batch_alter_table("execution_inputs") as batch:  # SQLite: rebuilds the table
        batch.alter_column("uri_head", existing_type=sa.Text, nullable=False)
    op.create_index("ix_execution_inputs_datum", "execution_inputs", ["datum_id"])
    op.create_index(
        "ix_execution_inputs_uri_head",
        "execution_inputs",
        ["uri_head"],
        postgresql_ops={"uri_head": "text_pattern_ops"},
    )
    # -- datums: by digest (gc, store verify), by tag -----------------------------------
    op.create_index("ix_datums_digest", "datums", ["digest"])
    op.create_index("ix_datum_tags_tag", "datum_tags", ["tag", "datum_id"])

    # -- aliases ------------------------------------------------------------------------
    op.create_table(
        "aliases",
        sa.Column(
            "project_id", ID, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("name", NAME, primary_key=True),
        sa.Column("datum_id", sa.String(255), sa.ForeignKey("datums.id"), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column(
            "execution_id", ID, sa.ForeignKey("executions.id", ondelete="SET NULL"), nullable=True
        ),
    )
    op.create_index("ix_aliases_datum", "aliases", ["datum_id"])
    op.create_table(
        "alias_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "project_id", ID, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("name", NAME, nullable=False),
        sa.Column("datum_id", sa.String(255), nullable=False),
        sa.Column("previous_datum_id", sa.String(255), nullable=True),
        sa.Column("at", _utc(), nullable=False),
        sa.Column("execution_id", ID, nullable=True),
    )
    op.create_index("ix_alias_events_name", "alias_events", ["project_id", "name", "id"])

    # -- datasets -----------------------------------------------------------------------
    op.create_table(
        "datasets",
        sa.Column(
            "project_id", ID, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("name", NAME, primary_key=True),
        sa.Column("created_at", _utc(), nullable=False),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("id", ID, primary_key=True),
        sa.Column("project_id", ID, nullable=False),
        sa.Column("dataset", NAME, nullable=False),
        sa.Column("version", NAME, nullable=False),
        sa.Column("tree_digest", DIGEST, nullable=False),
        sa.Column("file_count", sa.BigInteger, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column(
            "execution_id", ID, sa.ForeignKey("executions.id", ondelete="SET NULL"), nullable=True
        ),
        sa.Column("from_version", sa.Text, nullable=True),
        sa.Column("metadata", sa.JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id", "dataset"],
            ["datasets.project_id", "datasets.name"],
            ondelete="CASCADE",
            name="fk_dataset_versions_dataset",
        ),
        sa.UniqueConstraint(
            "project_id", "dataset", "version", name="uq_dataset_versions_version"
        ),
    )
    op.create_index(
        "ix_dataset_versions_created", "dataset_versions", ["project_id", "dataset", "created_at"]
    )
    op.create_index("ix_dataset_versions_execution", "dataset_versions", ["execution_id"])


def downgrade() -> None:
    for table in ("dataset_versions", "datasets", "alias_events", "aliases"):
        op.drop_table(table)
    op.drop_index("ix_datum_tags_tag", "datum_tags")
    op.drop_index("ix_datums_digest", "datums")
    op.drop_index("ix_execution_inputs_uri_head", "execution_inputs")
    op.drop_index("ix_execution_inputs_datum", "execution_inputs")
    with op.batch_alter_table("execution_inputs") as batch:
        batch.drop_column("uri_head")
