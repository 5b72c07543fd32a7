"""Onsite tracking snippet sets: each save is a new version, tied to the mapping versions it follows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from models.base import json_field, timestamp_field


class OnsiteSnippetSet(SQLModel, table=True):
    __tablename__ = "onsite_snippet_sets"
    __table_args__ = (UniqueConstraint("version"),)

    id: int | None = Field(default=None, primary_key=True)
    version: int
    # sync.onsite.OnsiteSpec as JSON: the bindings and syntax, so a download can be rebuilt exactly.
    spec: dict[str, Any] = json_field()
    # The catalog and order mappings (id, name, version) the snippets were checked against.
    catalog_mapping_id: int | None = Field(default=None, foreign_key="mappings.id")
    catalog_mapping_version: int | None = None
    order_mapping_id: int | None = Field(default=None, foreign_key="mappings.id")
    order_mapping_version: int | None = None
    created_by: int | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = timestamp_field()
