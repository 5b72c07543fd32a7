"""sync status: request samples, notification settings, indexes for the runs list and Overview

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 09:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BATCH_INCLUDE = ["accepted", "rejected", "item_count", "attempts", "http_429", "http_status"]


def upgrade() -> None:
    op.create_table(
        "request_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("url", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("request_headers", JSON, nullable=False),
        sa.Column("request_body", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("request_bytes", sa.Integer(), nullable=False),
        sa.Column("response_headers", JSON, nullable=False),
        sa.Column("response_body", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("response_bytes", sa.Integer(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["sync_runs.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("request_samples", schema=None) as batch_op:
        batch_op.create_index("ix_request_samples_run_id_id", ["run_id", "id"], unique=False)

    op.create_table(
        "notification_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("webhook_url", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("error_threshold_pct", sa.Float(), nullable=False),
        sa.Column("updated_by", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["updated_by"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )

    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_runs_kind")
        batch_op.create_index("ix_sync_runs_kind_id", ["kind", "id"], unique=False)
        batch_op.create_index("ix_sync_runs_source_id", ["source", "id"], unique=False)
    with op.batch_alter_table("sync_batches", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sync_batches_sent_at", ["sent_at"], unique=False, postgresql_include=BATCH_INCLUDE
        )
    with op.batch_alter_table("row_errors", schema=None) as batch_op:
        batch_op.drop_index("ix_row_errors_run_rule")
        batch_op.create_index(
            "ix_row_errors_run_group", ["run_id", "rule", "stage", "severity", "row_number"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("row_errors", schema=None) as batch_op:
        batch_op.drop_index("ix_row_errors_run_group")
        batch_op.create_index("ix_row_errors_run_rule", ["run_id", "rule"], unique=False)
    with op.batch_alter_table("sync_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_batches_sent_at")
    with op.batch_alter_table("sync_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_sync_runs_source_id")
        batch_op.drop_index("ix_sync_runs_kind_id")
        batch_op.create_index("ix_sync_runs_kind", ["kind"], unique=False)
    op.drop_table("notification_settings")
    with op.batch_alter_table("request_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_request_samples_run_id_id")
    op.drop_table("request_samples")
