"""A connected Klaviyo account (or the sandbox) and its encrypted private key."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlmodel import Field, SQLModel

from models.base import enum_field, timestamp_field


class ConnectionStatus(StrEnum):
    UNTESTED = "untested"
    TESTING = "testing"
    OK = "ok"
    FAILED = "failed"


class Account(SQLModel, table=True):
    __tablename__ = "accounts"

    id: int | None = Field(default=None, primary_key=True)
    label: str = Field(default="Klaviyo", max_length=120)
    sandbox: bool = False
    # Fernet token; the plaintext key never touches the database or a log.
    private_key_encrypted: str | None = None
    key_hint: str | None = Field(default=None, max_length=16)
    public_key: str | None = Field(default=None, max_length=16)
    klaviyo_account_id: str | None = Field(default=None, max_length=64)
    name: str | None = Field(default=None, max_length=200)
    timezone: str | None = Field(default=None, max_length=64)
    currency: str | None = Field(default=None, max_length=8)
    status: ConnectionStatus = enum_field(ConnectionStatus, ConnectionStatus.UNTESTED)
    status_message: str | None = None
    tested_at: datetime | None = timestamp_field(nullable=True)
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()
