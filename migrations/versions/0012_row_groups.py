"""row errors of grouped records: the events an error stopped, and the order it belongs to

Revision ID: 0012_row_groups
Revises: 0011_list_members
Create Date: 2026-12-03 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012_row_groups"
down_revision: str | None = "0011_list_members"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Earlier errors were one row per event, so 1 keeps their event counts true.
    with op.batch_alter_table("row_errors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("events", sa.Integer(), nullable=False, server_default=sa.text("1")))
        batch_op.add_column(
            sa.Column("group_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("row_errors", schema=None) as batch_op:
        batch_op.drop_column("group_key")
        batch_op.drop_column("events")
