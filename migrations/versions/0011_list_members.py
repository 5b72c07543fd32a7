"""list operation rows: one row per contact of a list operation, instead of a JSON list

Revision ID: 0011_list_members
Revises: 0010_ingest
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011_list_members"
down_revision: str | None = "0010_ingest"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "list_operation_rows",
        sa.Column("operation_id", sa.Integer(), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("raw", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True),
        sa.Column("phone_number", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("profile_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("scope", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("error", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.ForeignKeyConstraint(["operation_id"], ["list_operations.id"]),
        sa.PrimaryKeyConstraint("operation_id", "row"),
    )
    _copy_outcomes()
    with op.batch_alter_table("list_operations", schema=None) as batch_op:
        batch_op.drop_column("outcomes")


def downgrade() -> None:
    with op.batch_alter_table("list_operations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("outcomes", JSON, nullable=False, server_default=sa.text("'[]'")))
    op.drop_table("list_operation_rows")


def _copy_outcomes() -> None:
    """Earlier operations keep their per-row outcomes: each JSON entry becomes a row."""
    bind = op.get_bind()
    ops = sa.table("list_operations", sa.column("id", sa.Integer()), sa.column("outcomes", JSON))
    rows = sa.table(
        "list_operation_rows",
        *(sa.column(name) for name in ("operation_id", "row", "raw", "email", "phone_number")),
        *(sa.column(name) for name in ("profile_id", "scope", "status", "error")),
    )
    for op_id, outcomes in bind.execute(sa.select(ops.c.id, ops.c.outcomes)).all():
        seen: set[int] = set()
        entries = []
        for n, outcome in enumerate(outcomes or [], start=1):
            number = int(outcome.get("row") or n)
            if number in seen:
                continue
            seen.add(number)
            entries.append(
                {
                    "operation_id": op_id,
                    "row": number,
                    "raw": str(outcome.get("raw") or "")[:320],
                    "email": (outcome.get("email") or None) and str(outcome["email"])[:320],
                    "phone_number": (outcome.get("phone_number") or None)
                    and str(outcome["phone_number"])[:32],
                    "profile_id": (outcome.get("profile_id") or None) and str(outcome["profile_id"])[:64],
                    "scope": (outcome.get("scope") or None) and str(outcome["scope"])[:8],
                    "status": (outcome.get("status") or None) and str(outcome["status"])[:64],
                    "error": outcome.get("error") or None,
                }
            )
        if entries:
            bind.execute(rows.insert(), entries)
