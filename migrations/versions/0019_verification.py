"""proof of landing: each batch's tally of accepted events, and each run's verification result

Revision ID: 0019_verification
Revises: 0018_consent_changes
Create Date: 2026-12-03 18:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0019_verification"
down_revision: str | None = "0018_consent_changes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("sync_batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tally", _json(), nullable=True))
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("verification", _json(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.drop_column("verification")
    with op.batch_alter_table("sync_batches", schema=None) as batch_op:
        batch_op.drop_column("tally")
