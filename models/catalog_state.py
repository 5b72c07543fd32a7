"""What the last catalog syncs left in Klaviyo: one row per catalog entry, with its content hash."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.base import timestamp_field


class CatalogState(SQLModel, table=True):
    """A catalog entry Klaviyo accepted: a sync sends it again only when its content hash changes.

    Written only after the entry's job settled without an error for it, so a refused entry is
    tried again next sync. A deleted entry stays as a tombstone (``last_action`` "deleted").
    """

    __tablename__ = "catalog_state"
    __table_args__ = (
        sa.UniqueConstraint("account", "catalog", "entry_type", "external_id"),
        # A run's counts (created / updated / deleted) from the index alone.
        sa.Index("ix_catalog_state_run_action", "last_run_id", "last_action"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # The Klaviyo account the entry lives in (its id once the connection was tested).
    account: str = Field(max_length=64)
    catalog: str = Field(default="$custom:::$default", max_length=64)
    entry_type: str = Field(max_length=16)  # item | variant | category
    external_id: str = Field(max_length=255)
    content_hash: str = Field(max_length=64)
    klaviyo_id: str = Field(max_length=400)
    # A variant's item: deleting the item deletes its variants in Klaviyo, so their state follows.
    parent_external_id: str | None = Field(default=None, max_length=255)
    last_action: str = Field(max_length=16)  # created | updated | deleted
    last_run_id: int | None = Field(default=None, foreign_key="sync_runs.id")
    updated_at: datetime = timestamp_field()
