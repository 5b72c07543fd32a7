"""schedules: feed sources, schedules and their ticks

Revision ID: 0009_schedules
Revises: 0008_catalog_state
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

revision: str = "0009_schedules"
down_revision: str | None = "0008_catalog_state"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
