"""run routes: a schedule can route its feed's records by event name (a route set) instead of one mapping

Revision ID: 0021_run_routes
Revises: 0020_mapping_rules
Create Date: 2026-12-03 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0021_run_routes"
down_revision: str | None = "0020_mapping_rules"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("route_set", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("route_set")
