"""Who did what, when: one row per operator action."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Field, SQLModel

from models.base import json_field, timestamp_field


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_events"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = timestamp_field(index=True)
    user_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    username: str | None = Field(default=None, max_length=64)
    action: str = Field(index=True, max_length=64)
    target: str | None = Field(default=None, max_length=200)
    detail: dict[str, Any] = json_field()
    ip: str | None = Field(default=None, max_length=64)
