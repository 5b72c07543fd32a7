"""What the console keeps to watch runs: sampled Klaviyo requests and the run-end webhook."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.base import json_field, timestamp_field


class RequestSample(SQLModel, table=True):
    """One request to Klaviyo and its answer, as the worker's HTTP client saw them (key redacted)."""

    __tablename__ = "request_samples"
    __table_args__ = (sa.Index("ix_request_samples_run_id_id", "run_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="sync_runs.id")
    at: datetime = timestamp_field()
    method: str = Field(max_length=8)
    url: str = Field(max_length=500)
    status: int
    duration_ms: int | None = None
    request_headers: dict[str, Any] = json_field()
    request_body: str = ""
    request_bytes: int = 0
    response_headers: dict[str, Any] = json_field()
    response_body: str = ""
    response_bytes: int = 0
    truncated: bool = False


class NotificationSettings(SQLModel, table=True):
    """The admin's webhook: runs that fail, or end with too many failed rows, post to it."""

    __tablename__ = "notification_settings"

    id: int | None = Field(default=None, primary_key=True)
    webhook_url: str | None = Field(default=None, max_length=500)
    enabled: bool = False
    # Percent of the rows read that failed, above which a completed run is reported too.
    error_threshold_pct: float = 5.0
    updated_by: int | None = Field(default=None, foreign_key="users.id")
    updated_at: datetime = timestamp_field()
