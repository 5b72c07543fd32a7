"""ingest: real-time ingest sources, tokens and the durable event inbox

Revision ID: 0010_ingest
Revises: 0009_schedules
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

revision: str = "0010_ingest"
down_revision: str | None = "0009_schedules"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
