"""Sync runs, the batches they are cut into, and per-row errors: the ledger of what reached Klaviyo."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from models.base import enum_field, json_field, timestamp_field


def _nullable_json() -> Any:
    return Field(
        default=None, sa_column=sa.Column(sa.JSON().with_variant(JSONB(), "postgresql"), nullable=True)
    )


class RunStatus(StrEnum):
    DRAFT = "draft"
    VALIDATING = "validating"
    READY = "ready"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        """Queued or in progress: a worker holds the run or will pick it up."""
        return self in {RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.PAUSING, RunStatus.CANCELLING}

    @classmethod
    def active_states(cls) -> list[RunStatus]:
        """Every active state, for queries."""
        return [status for status in cls if status.active]

    @property
    def finished(self) -> bool:
        return self in {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}


class RunSource(StrEnum):
    UPLOAD = "upload"
    RETRY = "retry"
    FEED = "feed"
    INGEST = "ingest"


class SyncRun(SQLModel, table=True):
    __tablename__ = "sync_runs"
    # The runs list pages newest-first by id under any one filter: (filter, id) serves each.
    __table_args__ = (
        sa.Index("ix_sync_runs_status_id", "status", "id"),
        sa.Index("ix_sync_runs_kind_id", "kind", "id"),
        sa.Index("ix_sync_runs_source_id", "source", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)  # the mapping's target kind
    source: RunSource = enum_field(RunSource, RunSource.UPLOAD)
    status: RunStatus = enum_field(RunStatus, RunStatus.DRAFT)
    dry_run: bool = False
    upload_id: int | None = Field(default=None, foreign_key="uploads.id", index=True)
    mapping_version_id: int | None = Field(default=None, foreign_key="mapping_versions.id")
    parent_run_id: int | None = Field(default=None, foreign_key="sync_runs.id")
    # Rows to take from the source (retry runs); None means every row.
    only_rows: list[int] | None = Field(default=None, sa_column=sa.Column(sa.JSON(), nullable=True))
    options: dict[str, Any] = json_field()
    # Progress, all derived from committed batches so a resumed run continues where the last stopped.
    total_rows: int | None = None
    rows_read: int = 0
    rows_ok: int = 0
    rows_failed: int = 0
    rows_skipped: int = 0
    items_sent: int = 0
    requests: int = 0
    http_429: int = 0
    # Resume point: items with ordinal < next_ordinal are in committed batches; mapping errors of
    # rows <= cursor_row are recorded.
    next_ordinal: int = 0
    cursor_row: int = 0
    next_seq: int = 0
    summary: dict[str, Any] = json_field()
    error_message: str | None = None
    # What a check of Klaviyo found after the run (sync.verification): state, when, and the details.
    verification: dict[str, Any] | None = _nullable_json()
    # Only one worker drives a run: it holds the lease while it works.
    lease_owner: str | None = Field(default=None, max_length=120)
    lease_until: datetime | None = timestamp_field(nullable=True)
    created_by: int | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = timestamp_field(index=True)
    started_at: datetime | None = timestamp_field(nullable=True)
    finished_at: datetime | None = timestamp_field(nullable=True)
    updated_at: datetime = timestamp_field()


class BatchStatus(StrEnum):
    IN_FLIGHT = "in_flight"
    SENT = "sent"
    FAILED = "failed"


class SyncBatch(SQLModel, table=True):
    __tablename__ = "sync_batches"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "seq"),
        sa.Index("ix_sync_batches_run_status", "run_id", "status"),
        # The Overview's 24-hour throughput: an index-only scan on PostgreSQL.
        sa.Index(
            "ix_sync_batches_sent_at",
            "sent_at",
            postgresql_include=["accepted", "rejected", "item_count", "attempts", "http_429", "http_status"],
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="sync_runs.id")
    seq: int
    status: BatchStatus = enum_field(BatchStatus, BatchStatus.IN_FLIGHT)
    # Item ordinals [first_ordinal, last_ordinal] in the run's deterministic item stream.
    first_ordinal: int
    last_ordinal: int
    first_row: int
    last_row: int
    item_count: int = 0
    body_bytes: int = 0
    accepted: int = 0
    rejected: int = 0
    attempts: int = 0
    http_status: int | None = None
    http_429: int = 0
    job_id: str | None = Field(default=None, max_length=120)
    duration_ms: int | None = None
    # Events Klaviyo accepted in this batch per metric and local day (sync.verification.Tally):
    # written with the batch's outcome, so a batch sent again on resume replaces its own count.
    tally: dict[str, Any] | None = _nullable_json()
    created_at: datetime = timestamp_field()
    sent_at: datetime | None = timestamp_field(nullable=True)


class RowError(SQLModel, table=True):
    __tablename__ = "row_errors"
    __table_args__ = (
        sa.Index("ix_row_errors_run_row", "run_id", "row_number"),
        # Errors by rule (grouped counts, then the first rows of each group) from the index alone.
        sa.Index("ix_row_errors_run_group", "run_id", "rule", "stage", "severity", "row_number"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="sync_runs.id")
    row_number: int
    severity: str = Field(default="error", max_length=8)  # error | warning
    stage: str = Field(default="mapping", max_length=16)  # source | mapping | klaviyo
    column: str | None = Field(default=None, max_length=200)
    rule: str = Field(max_length=64)
    message: str
    values: dict[str, Any] = json_field()
    batch_id: int | None = Field(default=None, foreign_key="sync_batches.id")
    created_at: datetime = timestamp_field()
    # Events (items) the error stopped on this row: a grouped order's error counts its events on the
    # order's first row and 0 on its other rows, which fail with it.
    events: int = Field(default=1, sa_column_kwargs={"server_default": sa.text("1")})
    # The order (grouping key) the row belongs to, so a retry rebuilds the whole order.
    group_key: str | None = Field(default=None, max_length=200)
