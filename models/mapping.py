"""Mappings: a named mapping and its immutable versions (a run records the version it used)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from models.base import json_field, timestamp_field


class Mapping(SQLModel, table=True):
    __tablename__ = "mappings"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, index=True)
    # The sync.mapping TargetKind value (event, order, profile, catalog_item, ...).
    target_kind: str = Field(max_length=32, index=True)
    current_version: int = 1
    deleted: bool = False
    created_by: int | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()


class MappingVersion(SQLModel, table=True):
    __tablename__ = "mapping_versions"
    __table_args__ = (UniqueConstraint("mapping_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    mapping_id: int = Field(foreign_key="mappings.id", index=True)
    version: int
    # sync.mapping.Mapping as JSON: the whole spec, so an old run can be explained exactly.
    spec: dict[str, Any] = json_field()
    created_by: int | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = timestamp_field()
