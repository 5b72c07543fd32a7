"""Real-time ingest: sources (a token per store integration) and the durable inbox of what they posted."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.base import enum_field, json_field, timestamp_field


class IngestSource(SQLModel, table=True):
    """One integration posting events or orders. A record naming its event (``event``) goes through
    that event's route; a record without one through ``mapping_id``, when the source has one."""

    __tablename__ = "ingest_sources"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120, unique=True)
    mapping_id: int | None = Field(default=None, foreign_key="mappings.id")
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


class IngestRoute(SQLModel, table=True):
    """Records of one event name (compared case-insensitively) go through this mapping."""

    __tablename__ = "ingest_routes"
    __table_args__ = (sa.UniqueConstraint("source_id", "event_key", name="uq_ingest_routes_source_event"),)

    id: int | None = Field(default=None, primary_key=True)
    source_id: int = Field(foreign_key="ingest_sources.id", index=True)
    event_name: str = Field(max_length=200)  # as the operator typed it
    event_key: str = Field(max_length=200)  # sync.presets.route_key(event_name)
    mapping_id: int = Field(foreign_key="mappings.id")
    created_at: datetime = timestamp_field()


class InboxStatus(StrEnum):
    PENDING = "pending"  # waiting to be forwarded (again, after next_attempt_at)
    SENDING = "sending"  # claimed by a forwarder until lease_until
    SENT = "sent"
    FAILED = "failed"  # final: the mapping or Klaviyo refused it, or retries ran out
    UNROUTED = "unrouted"  # its event has no route (yet): kept to be sent once one is added


class IngestRecord(SQLModel, table=True):
    """One posted record, stored before the 202; the forwarder maps and sends it."""

    __tablename__ = "ingest_inbox"
    __table_args__ = (
        # The same order posted twice is stored once: the key is the mapping's unique_id.
        sa.UniqueConstraint("source_id", "dedup_key", name="uq_ingest_inbox_source_key"),
        # Claims (pending rows of a source, oldest first) and the source page's lists by status.
        sa.Index("ix_ingest_inbox_source_status_id", "source_id", "status", "id"),
        # The source page's counts per route over the last day (a range at the index's end).
        sa.Index("ix_ingest_inbox_source_received", "source_id", "received_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    source_id: int = Field(foreign_key="ingest_sources.id")
    dedup_key: str = Field(max_length=200)
    body: dict[str, Any] = json_field()
    # The record's event as routed (sync.presets.route_key); "" when the record names no event.
    route: str | None = Field(default=None, max_length=200)
    status: InboxStatus = enum_field(InboxStatus, InboxStatus.PENDING)
    attempts: int = 0
    # mapping | klaviyo (final) or transient (5xx, timeouts, network: retried until the limit).
    error_kind: str | None = Field(default=None, max_length=16)
    last_error: str | None = None
    received_at: datetime = timestamp_field()
    next_attempt_at: datetime | None = timestamp_field(nullable=True)
    lease_until: datetime | None = timestamp_field(nullable=True)
    sent_at: datetime | None = timestamp_field(nullable=True)
