"""Operators who log in to the console."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel

from models.base import enum_field, timestamp_field


class Role(StrEnum):
    """What a user may do: admin (keys, users) > operator (mappings, runs) > viewer (read only)."""

    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        return {"viewer": 0, "operator": 1, "admin": 2}[self.value]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class UserBase(SQLModel):
    username: str = Field(min_length=2, max_length=64)
    role: Role = Role.VIEWER


class User(UserBase, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(index=True, unique=True, max_length=64)
    role: Role = enum_field(Role, Role.VIEWER)
    password_hash: str
    is_active: bool = True
    created_at: datetime = timestamp_field()
    last_login_at: datetime | None = timestamp_field(nullable=True)


class UserCreate(UserBase):
    password: str = Field(min_length=10, max_length=256)
