"""The records schema as it was before Alembic (schema version 2: the unique uid).

Revision ID: 0001
Revises:
Create Date: 2026-11-30

A database made by an older warmline (metadata.create_all, warmline_schema at 1
or 2) already has these tables: records/migrate.py brings it to version 2 and
stamps it at this revision instead of running it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "warmline_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("handoff_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("uid", sa.String(32), nullable=True),
    )
    for column in ("at", "call_id", "handoff_id", "kind"):
        op.create_index(f"ix_warmline_events_{column}", "warmline_events", [column])
    op.create_index("ix_warmline_events_uid", "warmline_events", ["uid"], unique=True)
    schema = op.create_table("warmline_schema",
                             sa.Column("version", sa.Integer(), nullable=False))
    op.bulk_insert(schema, [{"version": 2}])  # what older warmlines read


def downgrade() -> None:
    op.drop_table("warmline_schema")
    op.drop_table("warmline_events")
