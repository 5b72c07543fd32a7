"""Feed sources, the schedules that sync them, each tick's outcome, and the records already taken."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.base import enum_field, json_field, timestamp_field


class FeedFormat(StrEnum):
    JSON = "json"
    CSV = "csv"
    XML = "xml"


class CursorKind(StrEnum):
    NONE = "none"  # every tick reads the whole feed; the record ledger keeps only what is new
    FIELD = "field"  # a record field (updated_at) whose high-water mark advances tick by tick
    PAGE = "page"  # the feed's own page cursor: the next tick starts where the last one stopped


class FeedSource(SQLModel, table=True):
    """An HTTP(S) URL answering JSON, CSV or XML records, and how to page through it incrementally."""

    __tablename__ = "feed_sources"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120)
    url: str = Field(max_length=2000)
    format: FeedFormat = enum_field(FeedFormat, FeedFormat.JSON)
    # JSON: dotted path to the records array ("" = the document is the array);
    # XML: the tag of one record ("" = every child of the root).
    records_path: str = Field(default="", max_length=200)
    auth_header_name: str | None = Field(default=None, max_length=120)
    auth_header_encrypted: str | None = None  # Fernet, like the Klaviyo key; shown only masked
    auth_header_hint: str | None = Field(default=None, max_length=16)
    cursor_kind: CursorKind = enum_field(CursorKind, CursorKind.NONE)
    cursor_field: str | None = Field(default=None, max_length=200)
    cursor_param: str | None = Field(default=None, max_length=120)
    key_field: str | None = Field(default=None, max_length=200)
    next_page_path: str | None = Field(default=None, max_length=200)
    page_param: str | None = Field(default=None, max_length=120)
    created_by: int | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()


class Schedule(SQLModel, table=True):
    """A feed source synced through a mapping on a cron expression or an interval."""

    __tablename__ = "schedules"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120)
    source_id: int = Field(foreign_key="feed_sources.id", index=True)
    mapping_id: int = Field(foreign_key="mappings.id")
    # Route each record by its event name instead ("spec", "ingest:<source id>"); mapping_id then
    # names the first route's mapping (services/run_routes.py).
    route_set: str | None = Field(default=None, max_length=40)
    list_id: str | None = Field(default=None, max_length=64)
    backfill: bool = False
    # Records without a time are sent timed when received (chosen on the form, stated on the page).
    use_received_time: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    cron: str | None = Field(default=None, max_length=120)
    interval_minutes: int | None = None
    enabled: bool = True
    next_run_at: datetime | None = timestamp_field(nullable=True, index=True)
    # Bumped by every cron claim: two workers comparing it never start the same tick.
    claim_seq: int = 0
    # Incremental state, advanced only in the transaction that creates the tick's run.
    cursor_value: str | None = Field(default=None, max_length=200)
    page_cursor: str | None = None
    # Only one tick of a schedule fetches at a time; a dead worker's lease simply expires.
    tick_owner: str | None = Field(default=None, max_length=120)
    tick_until: datetime | None = timestamp_field(nullable=True)
    last_tick_at: datetime | None = timestamp_field(nullable=True)
    last_outcome: str | None = Field(default=None, max_length=32)
    last_message: str | None = None
    last_run_id: int | None = Field(default=None, foreign_key="sync_runs.id")
    retry_limit: int = 5
    # Failed tick runs resumed on later ticks: {"<run id>": attempts so far}.
    retrying: dict[str, Any] = json_field()
    created_by: int | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()


class TickOutcome(StrEnum):
    FETCHING = "fetching"
    QUEUED_RUN = "queued_run"
    NOTHING_NEW = "nothing_new"
    SKIPPED = "skipped"
    FAILED = "failed"  # the feed could not be fetched or read, or no run could be made


class ScheduleTick(SQLModel, table=True):
    """One tick of a schedule (cron or run now): what it fetched and what it did."""

    __tablename__ = "schedule_ticks"
    __table_args__ = (sa.Index("ix_schedule_ticks_schedule_id", "schedule_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    schedule_id: int = Field(foreign_key="schedules.id")
    trigger: str = Field(default="cron", max_length=16)  # cron | manual
    outcome: TickOutcome = enum_field(TickOutcome, TickOutcome.FETCHING)
    message: str | None = None
    pages: int = 0
    records_fetched: int = 0
    records_new: int = 0
    run_id: int | None = Field(default=None, foreign_key="sync_runs.id")
    retried_runs: list[int] = json_field(list)
    started_at: datetime = timestamp_field()
    finished_at: datetime | None = timestamp_field(nullable=True)


class FeedRecordSeen(SQLModel, table=True):
    """The ledger of records a schedule has already turned into runs: key hash -> content digest."""

    __tablename__ = "feed_records_seen"

    schedule_id: int = Field(foreign_key="schedules.id", primary_key=True)
    record_key: str = Field(max_length=64, primary_key=True)
    digest: str = Field(max_length=64)
    seen_at: datetime = timestamp_field()
