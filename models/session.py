"""Login sessions kept on the server: the cookie carries only a random id, so ending a session here
ends it wherever the cookie was copied."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from models.base import timestamp_field


class UserSession(SQLModel, table=True):
    __tablename__ = "user_sessions"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)  # SHA-256 of the cookie's id, never the id
    user_id: int = Field(foreign_key="users.id", index=True)
    created_at: datetime = timestamp_field()
    last_seen_at: datetime = timestamp_field()
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=200)
