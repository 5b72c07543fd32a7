"""lists: klaviyo_lists (synced lists, cached member counts) and list_operations

Revision ID: 0007_lists
Revises: 0003
Create Date: 2026-11-24 09:55:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_lists"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
STATUSES = ("queued", "running", "needs_confirmation", "completed", "failed", "cancelled")


def upgrade() -> None:
    op.create_table(
        "klaviyo_lists",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("klaviyo_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("opt_in_process", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=True),
        sa.Column("profile_count", sa.Integer(), nullable=True),
        sa.Column("counted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("klaviyo_id"),
    )
    op.create_table(
        "list_operations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column(
            "status", sa.Enum(*STATUSES, name="listopstatus", native_enum=False, length=32), nullable=False
        ),
        sa.Column("list_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("params", JSON, nullable=False),
        sa.Column("outcomes", JSON, nullable=False),
        sa.Column("summary", JSON, nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("message", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("list_operations", schema=None) as batch_op:
        batch_op.create_index("ix_list_operations_list_id_id", ["list_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_table("list_operations")
    op.drop_table("klaviyo_lists")
