"""list membership by email (reserved; empty unless the lists work needs a table)

Revision ID: 0011_list_members
Revises: 0010_ingest
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

revision: str = "0011_list_members"
down_revision: str | None = "0010_ingest"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
