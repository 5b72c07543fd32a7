"""catalog_state: content hash per synced catalog entry (incremental catalog sync)

Revision ID: 0008_catalog_state
Revises: 0007_lists
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008_catalog_state"
down_revision: str | None = "0007_lists"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "catalog_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("catalog", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("entry_type", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("content_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("klaviyo_id", sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
        sa.Column("parent_external_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("last_action", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("last_run_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["last_run_id"], ["sync_runs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account", "catalog", "entry_type", "external_id"),
    )
    with op.batch_alter_table("catalog_state", schema=None) as batch_op:
        batch_op.create_index("ix_catalog_state_run_action", ["last_run_id", "last_action"], unique=False)


def downgrade() -> None:
    op.drop_table("catalog_state")
