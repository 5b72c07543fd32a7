"""catalog_state: content hash per synced catalog entry (incremental catalog sync)

Revision ID: 0008_catalog_state
Revises: 0007_lists
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

revision: str = "0008_catalog_state"
down_revision: str | None = "0007_lists"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
