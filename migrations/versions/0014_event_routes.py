"""event routes: an ingest source's mappings by event name, unrouted records, per-route counts

Revision ID: 0014_event_routes
Revises: 0013_catalog_scope
Create Date: 2026-12-03 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0014_event_routes"
down_revision: str | None = "0013_catalog_scope"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The ecommerce spec's events, as sync.presets names them in its mappings ("Ecommerce spec: <event> ->").
SPEC_EVENTS = (
    "Products Searched", "Product List Viewed", "Category Viewed", "Promotion Clicked", "Product Viewed",
    "Product Clicked", "Product Added", "Product Removed", "Cart Viewed", "Checkout Started",
    "Order Completed", "Order Updated", "Order Refunded", "Order Cancelled",
)  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "ingest_routes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("event_name", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("event_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("mapping_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["mapping_id"], ["mappings.id"]),
        sa.ForeignKeyConstraint(["source_id"], ["ingest_sources.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source_id", "event_key", name="uq_ingest_routes_source_event"),
    )
    with op.batch_alter_table("ingest_routes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ingest_routes_source_id"), ["source_id"], unique=False)
    with op.batch_alter_table("ingest_inbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("route", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch_op.create_index("ix_ingest_inbox_source_received", ["source_id", "received_at"], unique=False)
    # SQLite rebuilds the table (other tables reference its rows): migrations/env.py runs SQLite
    # migrations with foreign keys off, as SQLite's own procedure for altering a table asks.
    with op.batch_alter_table("ingest_sources", schema=None) as batch_op:
        batch_op.alter_column("mapping_id", existing_type=sa.Integer(), nullable=True)
    _route_spec_sources()


def _route_spec_sources() -> None:
    """A source over an ecommerce-spec preset took every record through it, whatever its event: that
    mapping becomes the route of its own event, so other events are kept unrouted, not mis-mapped."""
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT s.id, s.mapping_id, m.name FROM ingest_sources s JOIN mappings m ON m.id = s.mapping_id"
        )
    ).all()
    now = sa.func.now() if conn.dialect.name == "postgresql" else sa.text("CURRENT_TIMESTAMP")
    routes = sa.table(
        "ingest_routes",
        sa.column("source_id", sa.Integer),
        sa.column("event_name", sa.String),
        sa.column("event_key", sa.String),
        sa.column("mapping_id", sa.Integer),
        sa.column("created_at", sa.DateTime),
    )
    for source_id, mapping_id, name in rows:
        event = name.removeprefix("Ecommerce spec: ").partition(" -> ")[0]
        if not name.startswith("Ecommerce spec: ") or event not in SPEC_EVENTS:
            continue
        conn.execute(
            routes.insert().values(
                source_id=source_id,
                event_name=event,
                event_key=" ".join(event.split()).casefold(),
                mapping_id=mapping_id,
                created_at=now,
            )
        )
        conn.execute(sa.text("UPDATE ingest_sources SET mapping_id = NULL WHERE id = :id"), {"id": source_id})


def downgrade() -> None:
    with op.batch_alter_table("ingest_inbox", schema=None) as batch_op:
        batch_op.drop_index("ix_ingest_inbox_source_received")
        batch_op.drop_column("route")
    # A source that only had routes gets its first route's mapping back (mapping_id was required).
    op.execute(
        "UPDATE ingest_sources SET mapping_id = (SELECT r.mapping_id FROM ingest_routes r "
        "WHERE r.source_id = ingest_sources.id ORDER BY r.id LIMIT 1) WHERE mapping_id IS NULL"
    )
    op.execute("DELETE FROM ingest_inbox WHERE source_id IN (SELECT id FROM ingest_sources WHERE mapping_id IS NULL)")
    op.execute("DELETE FROM ingest_routes WHERE source_id IN (SELECT id FROM ingest_sources WHERE mapping_id IS NULL)")
    op.execute("DELETE FROM ingest_sources WHERE mapping_id IS NULL")
    with op.batch_alter_table("ingest_sources", schema=None) as batch_op:
        batch_op.alter_column("mapping_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("ingest_routes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ingest_routes_source_id"))
    op.drop_table("ingest_routes")
