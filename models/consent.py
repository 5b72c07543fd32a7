"""Consent changes made in Klaviyo (unsubscribes, resubscribes, spam complaints, bounces), the two
ways they come in (polling the Events API, system webhooks) and the ways they go out to the store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.base import json_field, timestamp_field


class ConsentChange(SQLModel, table=True):
    """One Klaviyo consent event, stored once however often it arrives (``event_id`` is unique).

    ``id`` is the pull API's cursor: rows are inserted under a lock held to commit, so ids become
    visible in order and a reader past id N never misses a row below N committed later.
    """

    __tablename__ = "consent_changes"
    __table_args__ = (sa.Index("ix_consent_changes_occurred_at", "occurred_at"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=64, unique=True)
    kind: str = Field(max_length=32, index=True)  # subscribed | unsubscribed | spam_complaint | bounced
    channel: str = Field(max_length=16)  # email | sms
    metric: str = Field(max_length=120)
    email: str | None = Field(default=None, max_length=320, index=True)
    phone_number: str | None = Field(default=None, max_length=32)
    profile_id: str | None = Field(default=None, max_length=64)
    external_id: str | None = Field(default=None, max_length=64)
    occurred_at: datetime = timestamp_field()
    source: str = Field(max_length=16)  # poll | webhook
    received_at: datetime = timestamp_field()
    properties: dict[str, Any] = json_field()


class ConsentPollState(SQLModel, table=True):
    """The polling way in: metric ids found by name, a high-water mark per metric, and its health."""

    __tablename__ = "consent_poll_state"

    id: int | None = Field(default=None, primary_key=True)
    enabled: bool = True
    # {"<metric name>": "<metric id>"} and {"<metric id>": "<ISO datetime of the newest event read>"}
    metric_ids: dict[str, Any] = json_field()
    marks: dict[str, Any] = json_field()
    started_at: datetime | None = timestamp_field(nullable=True)
    lease_owner: str | None = Field(default=None, max_length=120)
    lease_until: datetime | None = timestamp_field(nullable=True)
    last_polled_at: datetime | None = timestamp_field(nullable=True)
    last_success_at: datetime | None = timestamp_field(nullable=True)
    last_received_at: datetime | None = timestamp_field(nullable=True)
    last_error: str | None = None
    failures: int = 0
    events_read: int = 0


class KlaviyoWebhook(SQLModel, table=True):
    """A system webhook the console created in Klaviyo, and what arrived through it."""

    __tablename__ = "klaviyo_webhooks"

    id: int | None = Field(default=None, primary_key=True)
    klaviyo_id: str | None = Field(default=None, max_length=64)
    name: str = Field(max_length=120)
    endpoint_url: str = Field(max_length=2000)
    secret_encrypted: str  # Fernet; Klaviyo signs each delivery with it
    topics: list[str] = json_field(list)
    created_at: datetime = timestamp_field()
    last_received_at: datetime | None = timestamp_field(nullable=True)
    received_count: int = 0
    rejected_count: int = 0
    last_rejected_at: datetime | None = timestamp_field(nullable=True)
    last_error: str | None = None


class ConsentIntegration(SQLModel, table=True):
    """A store taking consent changes: a pull token, and optionally a signed webhook to its URL."""

    __tablename__ = "consent_integrations"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120, unique=True)
    token_hash: str = Field(max_length=64, unique=True)
    token_hint: str = Field(max_length=8)
    webhook_url: str | None = Field(default=None, max_length=2000)
    webhook_secret_encrypted: str | None = None
    # The webhook's position in the ledger: every change up to this id was delivered, in order.
    delivered_through: int = 0
    attempts: int = 0  # consecutive failed attempts of the head batch
    next_attempt_at: datetime | None = timestamp_field(nullable=True)
    last_delivery_at: datetime | None = timestamp_field(nullable=True)
    last_error: str | None = None
    last_pulled_at: datetime | None = timestamp_field(nullable=True)
    last_pulled_through: int = 0
    created_by: int | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = timestamp_field()


class ConsentDelivery(SQLModel, table=True):
    """One attempt to post a batch of changes (ids first..last) to an integration's webhook."""

    __tablename__ = "consent_deliveries"
    __table_args__ = (sa.Index("ix_consent_deliveries_integration", "integration_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    integration_id: int = Field(foreign_key="consent_integrations.id")
    first_change_id: int
    last_change_id: int
    count: int
    attempt: int
    ok: bool = False
    status_code: int | None = None
    error: str | None = None
    at: datetime = timestamp_field()
