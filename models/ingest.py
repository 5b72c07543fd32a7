"""Real-time ingest: sources (a token per store integration) and the durable inbox of what they posted."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.base import enum_field, json_field, timestamp_field


class IngestSource(SQLModel, table=True):
    """One integration posting events or orders; its records go through one event/order mapping."""

    __tablename__ = "ingest_sources"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120, unique=True)
    mapping_id: int = Field(foreign_key="mappings.id")
    # Only a hash of the bearer token is kept: it is shown once, when created or rotated.
    token_hash: str | None = Field(default=None, max_length=64)
    token_hint: str | None = Field(default=None, max_length=8)
    # Optional HMAC signing secret (Fernet, config/crypto.py): requests must then carry X-Signature.
    signing_secret_encrypted: str | None = None
    revoked_at: datetime | None = timestamp_field(nullable=True)
    # Kept by the forwarder (one per source at a time) and by ingest only when repeats arrive, so the
    # hot path never updates this row.
    sent_count: int = 0
    failed_count: int = 0
    duplicate_count: int = 0
    created_by: int | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()

    @property
    def active(self) -> bool:
        return self.token_hash is not None and self.revoked_at is None


class InboxStatus(StrEnum):
    PENDING = "pending"  # waiting to be forwarded (again, after next_attempt_at)
    SENDING = "sending"  # claimed by a forwarder until lease_until
    SENT = "sent"
    FAILED = "failed"  # final: the mapping or Klaviyo refused it, or retries ran out


class IngestRecord(SQLModel, table=True):
    """One posted record, stored before the 202; the forwarder maps and sends it."""

    __tablename__ = "ingest_inbox"
    __table_args__ = (
        # The same order posted twice is stored once: the key is the mapping's unique_id.
        sa.UniqueConstraint("source_id", "dedup_key", name="uq_ingest_inbox_source_key"),
        # Claims (pending rows of a source, oldest first) and the source page's lists by status.
        sa.Index("ix_ingest_inbox_source_status_id", "source_id", "status", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    source_id: int = Field(foreign_key="ingest_sources.id")
    dedup_key: str = Field(max_length=200)
    body: dict[str, Any] = json_field()
    status: InboxStatus = enum_field(InboxStatus, InboxStatus.PENDING)
    attempts: int = 0
    # mapping | klaviyo (final) or transient (5xx, timeouts, network: retried until the limit).
    error_kind: str | None = Field(default=None, max_length=16)
    last_error: str | None = None
    received_at: datetime = timestamp_field()
    next_attempt_at: datetime | None = timestamp_field(nullable=True)
    lease_until: datetime | None = timestamp_field(nullable=True)
    sent_at: datetime | None = timestamp_field(nullable=True)
