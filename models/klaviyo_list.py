"""Klaviyo lists as last synced from the account (cached member counts), and list operations."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.base import enum_field, json_field, timestamp_field


class KlaviyoList(SQLModel, table=True):
    """One Klaviyo list. ``profile_count`` is fetched on demand (its rate class is 1/s, 15/min)."""

    __tablename__ = "klaviyo_lists"

    id: int | None = Field(default=None, primary_key=True)
    klaviyo_id: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=255)
    opt_in_process: str | None = Field(default=None, max_length=32)  # single_opt_in | double_opt_in
    created: datetime | None = timestamp_field(nullable=True)  # from Klaviyo
    updated: datetime | None = timestamp_field(nullable=True)  # from Klaviyo
    profile_count: int | None = None
    counted_at: datetime | None = timestamp_field(nullable=True)
    synced_at: datetime = timestamp_field()


class ListOpStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    # Unsubscribe: membership checked, some would be global; waits for the operator to confirm.
    NEEDS_CONFIRMATION = "needs_confirmation"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """Queued or in progress: a worker holds the operation or will pick it up."""
        return self in {ListOpStatus.QUEUED, ListOpStatus.RUNNING}

    @classmethod
    def active_states(cls) -> list[ListOpStatus]:
        """Every active state, for queries."""
        return [status for status in cls if status.active]


class ListOperation(SQLModel, table=True):
    """One operator action on lists done by a worker job: sync, count, create, rename, add/remove
    members, unsubscribe, suppress. Its input rows and their outcomes are ListOperationRows."""

    __tablename__ = "list_operations"
    __table_args__ = (sa.Index("ix_list_operations_list_id_id", "list_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    status: ListOpStatus = enum_field(ListOpStatus, ListOpStatus.QUEUED)
    list_id: str | None = Field(default=None, max_length=64)  # the Klaviyo list id
    params: dict[str, Any] = json_field()
    summary: dict[str, Any] = json_field()
    total: int = 0
    done: int = 0
    message: str | None = None
    created_by: int | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = timestamp_field()
    finished_at: datetime | None = timestamp_field(nullable=True)


class ListOperationRow(SQLModel, table=True):
    """One contact of a list operation (a form line or an upload row) and what became of it.

    A table rather than a JSON list on the operation, so an unsubscribe from an upload of any size
    is checked, confirmed and sent a chunk at a time, and the page reads only the rows it shows.
    """

    __tablename__ = "list_operation_rows"

    operation_id: int = Field(foreign_key="list_operations.id", primary_key=True)
    row: int = Field(primary_key=True)  # the form line or the upload's row number
    raw: str = Field(default="", max_length=320)
    email: str | None = Field(default=None, max_length=320)
    phone_number: str | None = Field(default=None, max_length=32)
    profile_id: str | None = Field(default=None, max_length=64)
    scope: str | None = Field(default=None, max_length=8)  # an unsubscribe check: list | global
    status: str | None = Field(default=None, max_length=64)  # e.g. added, unsubscribed globally
    error: str | None = None
