"""schedules: feed sources, schedules, their ticks and the ledger of records already taken

Revision ID: 0009_schedules
Revises: 0008_catalog_state
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_schedules"
down_revision: str | None = "0008_catalog_state"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "feed_sources",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("url", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
        sa.Column(
            "format",
            sa.Enum("json", "csv", "xml", name="feedformat", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("records_path", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("auth_header_name", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True),
        sa.Column("auth_header_encrypted", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("auth_header_hint", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column(
            "cursor_kind",
            sa.Enum("none", "field", "page", name="cursorkind", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("cursor_field", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("cursor_param", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True),
        sa.Column("key_field", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("next_page_path", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("page_param", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("mapping_id", sa.Integer(), nullable=False),
        sa.Column("list_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("backfill", sa.Boolean(), nullable=False),
        sa.Column("cron", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True),
        sa.Column("interval_minutes", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claim_seq", sa.Integer(), nullable=False),
        sa.Column("cursor_value", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("page_cursor", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("tick_owner", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True),
        sa.Column("tick_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_tick_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_outcome", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("last_message", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("last_run_id", sa.Integer(), nullable=True),
        sa.Column("retry_limit", sa.Integer(), nullable=False),
        sa.Column("retrying", JSON, nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
        ),
        sa.ForeignKeyConstraint(
            ["last_run_id"],
            ["sync_runs.id"],
        ),
        sa.ForeignKeyConstraint(
            ["mapping_id"],
            ["mappings.id"],
        ),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["feed_sources.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_schedules_next_run_at"), ["next_run_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_schedules_source_id"), ["source_id"], unique=False)

    op.create_table(
        "feed_records_seen",
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("record_key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("digest", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
        ),
        sa.PrimaryKeyConstraint("schedule_id", "record_key"),
    )
    op.create_table(
        "schedule_ticks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("trigger", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column(
            "outcome",
            sa.Enum(
                "fetching",
                "queued_run",
                "nothing_new",
                "skipped",
                "failed",
                name="tickoutcome",
                native_enum=False,
                length=32,
            ),
            nullable=False,
        ),
        sa.Column("message", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("records_fetched", sa.Integer(), nullable=False),
        sa.Column("records_new", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("retried_runs", JSON, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["sync_runs.id"],
        ),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["schedules.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("schedule_ticks", schema=None) as batch_op:
        batch_op.create_index("ix_schedule_ticks_schedule_id", ["schedule_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("schedule_ticks", schema=None) as batch_op:
        batch_op.drop_index("ix_schedule_ticks_schedule_id")

    op.drop_table("schedule_ticks")
    op.drop_table("feed_records_seen")
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_schedules_source_id"))
        batch_op.drop_index(batch_op.f("ix_schedules_next_run_at"))

    op.drop_table("schedules")
    op.drop_table("feed_sources")
