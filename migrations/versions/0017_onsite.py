"""onsite tracking snippet sets: versioned bindings of store variables to onsite metric properties

Revision ID: 0017_onsite
Revises: 0015_sessions
Create Date: 2026-12-03 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017_onsite"
down_revision: str | None = "0015_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "onsite_snippet_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("catalog_mapping_id", sa.Integer(), nullable=True),
        sa.Column("catalog_mapping_version", sa.Integer(), nullable=True),
        sa.Column("order_mapping_id", sa.Integer(), nullable=True),
        sa.Column("order_mapping_version", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["catalog_mapping_id"], ["mappings.id"]),
        sa.ForeignKeyConstraint(["order_mapping_id"], ["mappings.id"]),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("version"),
    )


def downgrade() -> None:
    op.drop_table("onsite_snippet_sets")
