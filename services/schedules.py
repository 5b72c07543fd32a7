"""Schedules: feed sources synced through a mapping on a cron expression or an interval.

A tick fetches the feed from where the last one stopped, keeps the records this schedule has not
taken yet (the ledger in ``feed_records_seen``), stores them as an NDJSON upload and starts an
ordinary run on it (source ``feed``), so the run page, row errors, the error CSV and "retry failed
rows" all apply. The high-water mark, the page cursor and the ledger advance in the transaction
that creates that run, and nowhere else.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import structlog
from arq.connections import ArqRedis
from croniter import croniter
from sqlalchemy import delete, func, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from config.crypto import decrypt_secret, encrypt_secret, mask
from config.settings import Settings
from models import (
    CursorKind,
    FeedFormat,
    FeedRecordSeen,
    FeedSource,
    Mapping,
    MappingVersion,
    RunSource,
    RunStatus,
    Schedule,
    ScheduleTick,
    SyncRun,
    TickOutcome,
    Upload,
    UploadStatus,
    User,
)
from models.base import aware, utcnow
from services import run_routes, runs
from sync import outbound
from sync.feed_check import check_records
from sync.feeds import (
    FeedError,
    FeedSpec,
    FeedState,
    check_url,
    fetch_feed,
    record_digest,
    record_key,
    write_ndjson,
)
from sync.mapping import Mapping as Spec

log = structlog.get_logger(__name__)
RUN_SCHEDULE = "run_schedule"
# A tick holds its schedule this long at most; a worker that died mid-fetch frees it after.
TICK_LEASE = timedelta(minutes=10)
PREVIEW_RECORDS = 20
LEDGER_CHUNK = 500
MIN_INTERVAL_MINUTES = 1
# A ledger entry not seen in the feed for this long is pruned: the feed has dropped that record (or
# the cursor has long passed it). Seen entries are re-stamped at most once a day, to spare writes.
LEDGER_KEEP = timedelta(days=30)
LEDGER_RESTAMP = timedelta(days=1)
# Changing any of these changes what the next tick fetches; the edit form asks about the position.
FEED_FIELDS = (
    "url",
    "format",
    "records_path",
    "cursor_kind",
    "cursor_field",
    "cursor_param",
    "key_field",
    "next_page_path",
    "page_param",
)


class ScheduleError(ValueError):
    """A schedule that cannot be saved or changed, with the reason for the operator."""

    def __init__(self, message: str, field: str = "mapping_id") -> None:
        super().__init__(message)
        self.field = field  # the form field the message belongs next to


# ---------------------------------------------------------------- timing


def next_after(schedule: Schedule, after: datetime) -> datetime:
    """The first run time strictly after ``after`` (UTC)."""
    if schedule.cron:
        return croniter(schedule.cron, after).get_next(datetime)
    return after + timedelta(minutes=schedule.interval_minutes or 60)


def upcoming(schedule: Schedule, count: int = 5) -> list[datetime]:
    """The next few run times, for the page to show what the expression means."""
    start = aware(schedule.next_run_at) or utcnow()
    times = [start]
    while len(times) < count:
        times.append(next_after(schedule, times[-1]))
    return times


def describe_timing(schedule: Schedule) -> str:
    if schedule.cron:
        return f"cron {schedule.cron} (UTC)"
    minutes = schedule.interval_minutes or 0
    return f"every {minutes} minute{'s' if minutes != 1 else ''}"


# ---------------------------------------------------------------- creating and changing


@dataclass
class ScheduleForm:
    """What the New and Edit schedule forms send, checked field by field."""

    name: str
    mapping_id: int
    url: str
    # Route each record by its event name ("spec", "ingest:<id>") instead of one mapping.
    route_set: str = ""
    format: str = "json"
    records_path: str = ""
    auth_header_name: str = ""
    auth_header_value: str = ""
    cursor_kind: str = "none"
    cursor_field: str = ""
    cursor_param: str = ""
    key_field: str = ""
    next_page_path: str = ""
    page_param: str = ""
    timing: str = "interval"
    cron: str = ""
    interval_minutes: str = "60"
    list_id: str = ""
    backfill: bool = False
    use_received_time: bool = False
    retry_limit: str = "5"
    # Edit only: drop the stored auth header; and keep the feed position or start over.
    auth_header_remove: bool = False
    position: str = "keep"

    @classmethod
    def from_form(cls, form: Any) -> ScheduleForm:
        def text(name: str, default: str = "") -> str:
            return str(form.get(name) or default).strip()

        route_set = ""
        if run_routes.is_route_choice(text("mapping_id")):
            route_set = text("mapping_id").removeprefix(run_routes.CHOICE_PREFIX)
        try:
            mapping_id = int(text("mapping_id", "0") or 0)
        except ValueError:
            mapping_id = 0
        return cls(
            name=text("name"),
            mapping_id=mapping_id,
            route_set=route_set,
            url=text("url"),
            format=text("format", "json"),
            records_path=text("records_path"),
            auth_header_name=text("auth_header_name"),
            auth_header_value=str(form.get("auth_header_value") or ""),
            cursor_kind=text("cursor_kind", "none"),
            cursor_field=text("cursor_field"),
            cursor_param=text("cursor_param"),
            key_field=text("key_field"),
            next_page_path=text("next_page_path"),
            page_param=text("page_param"),
            timing=text("timing", "interval"),
            cron=text("cron"),
            interval_minutes=text("interval_minutes", "60"),
            list_id=text("list_id"),
            backfill=form.get("backfill") == "1",
            use_received_time=form.get("use_received_time") == "1",
            retry_limit=text("retry_limit", "5"),
            auth_header_remove=form.get("auth_header_remove") == "1",
            position=text("position", "keep"),
        )

    def problems(self, stored_auth: bool = False) -> dict[str, str]:
        """Field name -> what is wrong with it; empty when the form can be saved.

        ``stored_auth``: editing a schedule whose auth header is stored; an empty value keeps it.
        """
        found: dict[str, str] = {}
        if not self.name or len(self.name) > 120:
            found["name"] = "Give the schedule a name of at most 120 characters."
        if not self.mapping_id and not self.route_set:
            found["mapping_id"] = "Choose the mapping the feed's records go through."
        url_problem = check_url(self.url) if self.url else "Enter the feed's URL."
        if url_problem:
            found["url"] = url_problem
        if self.format not in {f.value for f in FeedFormat}:
            found["format"] = "Choose JSON, CSV or XML."
        if self.cursor_kind not in {k.value for k in CursorKind}:
            found["cursor_kind"] = "Choose how the feed is read incrementally."
        if self.cursor_kind == CursorKind.FIELD and not self.cursor_field:
            found["cursor_field"] = "Name the record field that grows with each change (e.g. updated_at)."
        if self.cursor_kind == CursorKind.PAGE and not (self.next_page_path and self.page_param):
            found["page_param"] = (
                "A page cursor needs where the next cursor is in the answer and its parameter name."
            )
        if self.format == FeedFormat.CSV and self.next_page_path:
            found["next_page_path"] = "A CSV feed pages only through a Link header; leave this empty."
        keeps_stored = stored_auth and not self.auth_header_value
        if self.auth_header_remove:
            pass
        elif stored_auth and not self.auth_header_name:
            found["auth_header_name"] = (
                "Give the auth header's name (its stored value is kept unless you type a new one), "
                "or tick Remove the auth header."
            )
        elif not keeps_stored and bool(self.auth_header_name) != bool(self.auth_header_value):
            found["auth_header_name"] = "Give both the auth header's name and its value, or neither."
        elif self.auth_header_name and not _header_name_ok(self.auth_header_name):
            found["auth_header_name"] = (
                "A header name has letters, digits and dashes only (e.g. Authorization)."
            )
        if self.timing == "cron":
            if not self.cron or not croniter.is_valid(self.cron):
                found["cron"] = (
                    "Not a cron expression: five fields, minute hour day month weekday (e.g. */15 * * * *)."
                )
        elif self.timing == "interval":
            minutes = _int(self.interval_minutes)
            if minutes is None or not MIN_INTERVAL_MINUTES <= minutes <= 7 * 24 * 60:
                found["interval_minutes"] = (
                    "The interval is a whole number of minutes, from 1 to 10080 (a week)."
                )
        else:
            found["timing"] = "Choose a cron expression or an interval."
        limit = _int(self.retry_limit)
        if limit is None or not 0 <= limit <= 100:
            found["retry_limit"] = "Retries are a whole number from 0 to 100."
        if self.position not in ("keep", "restart"):
            found["position"] = "Choose to keep the feed position or to start over."
        return found


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _header_name_ok(name: str) -> bool:
    return all(ch.isalnum() or ch == "-" for ch in name) and len(name) <= 120


async def create_schedule(
    db: AsyncSession, settings: Settings, form: ScheduleForm, user: User | None
) -> Schedule:
    """Store the feed source and its schedule; the first tick is due at the next run time."""
    problems = form.problems()
    if problems:
        raise ScheduleError(" ".join(problems.values()))
    await _check_reachable(settings, form.url)
    await _resolve_routes(db, form, user)
    mapping = await _live_mapping(db, form.mapping_id)
    source = FeedSource(name=form.name, url=form.url, created_by=user.id if user else None)
    _apply_source(source, form)
    if form.auth_header_name:
        _store_auth(source, settings, form.auth_header_name, form.auth_header_value)
    db.add(source)
    await db.flush()
    schedule = Schedule(
        name=form.name,
        source_id=source.id or 0,
        mapping_id=mapping.id or 0,
        created_by=user.id if user else None,
    )
    _apply_schedule(schedule, form)
    schedule.next_run_at = next_after(schedule, utcnow())
    db.add(schedule)
    await db.flush()
    return schedule


async def _check_reachable(settings: Settings, url: str) -> None:
    """Refuse a feed whose host resolves to an address the console does not reach (the fetch checks
    again at every connection)."""
    problem = await outbound.url_problem(url, settings.outbound_allow_list, "feed URL")
    if problem:
        raise ScheduleError(problem, field="url")


async def _resolve_routes(db: AsyncSession, form: ScheduleForm, user: User | None) -> None:
    """A schedule routed by event name keeps its first route's mapping as its own (each tick routes
    by the set's mappings as they are then)."""
    if not form.route_set:
        return
    try:
        routing = await run_routes.resolve_route_set(db, run_routes.CHOICE_PREFIX + form.route_set, user)
    except runs.RunError as exc:
        raise ScheduleError(str(exc)) from exc
    form.mapping_id = int(routing["routes"][0]["mapping_id"])


async def _live_mapping(db: AsyncSession, mapping_id: int) -> Mapping:
    mapping = await db.get(Mapping, mapping_id)
    if mapping is None or mapping.deleted:
        raise ScheduleError(f"Mapping #{mapping_id} does not exist.")
    return mapping


def _apply_source(source: FeedSource, form: ScheduleForm) -> None:
    source.name, source.url = form.name, form.url
    source.format = FeedFormat(form.format)
    source.records_path = form.records_path
    source.cursor_kind = CursorKind(form.cursor_kind)
    source.cursor_field = form.cursor_field or None
    source.cursor_param = form.cursor_param or None
    source.key_field = form.key_field or None
    source.next_page_path = form.next_page_path or None
    source.page_param = form.page_param or None


apply_source = _apply_source  # "Test feed" fills a transient source the same way


def _apply_schedule(schedule: Schedule, form: ScheduleForm) -> None:
    schedule.name, schedule.mapping_id = form.name, form.mapping_id
    schedule.route_set = form.route_set or None
    schedule.list_id = form.list_id or None
    schedule.backfill = form.backfill
    schedule.use_received_time = form.use_received_time
    schedule.cron = form.cron if form.timing == "cron" else None
    schedule.interval_minutes = int(form.interval_minutes) if form.timing == "interval" else None
    schedule.retry_limit = int(form.retry_limit)


def _store_auth(source: FeedSource, settings: Settings, name: str, value: str) -> None:
    source.auth_header_name = name
    source.auth_header_encrypted = encrypt_secret(settings.secret, value)
    source.auth_header_hint = mask(value)[-8:]


def form_values(schedule: Schedule, source: FeedSource) -> dict[str, str]:
    """The Edit form filled from the stored schedule (the auth header's value is never included)."""
    return {
        "name": schedule.name,
        "mapping_id": (
            run_routes.CHOICE_PREFIX + schedule.route_set if schedule.route_set else str(schedule.mapping_id)
        ),
        "url": source.url,
        "format": source.format.value,
        "records_path": source.records_path,
        "auth_header_name": source.auth_header_name or "",
        "cursor_kind": source.cursor_kind.value,
        "cursor_field": source.cursor_field or "",
        "cursor_param": source.cursor_param or "",
        "key_field": source.key_field or "",
        "next_page_path": source.next_page_path or "",
        "page_param": source.page_param or "",
        "timing": "cron" if schedule.cron else "interval",
        "cron": schedule.cron or "",
        "interval_minutes": str(schedule.interval_minutes or 60),
        "list_id": schedule.list_id or "",
        "backfill": "1" if schedule.backfill else "",
        "use_received_time": "1" if schedule.use_received_time else "",
        "retry_limit": str(schedule.retry_limit),
        "position": "keep",
    }


def _snapshot(schedule: Schedule, source: FeedSource) -> dict[str, Any]:
    return {
        **{name: getattr(source, name) for name in FEED_FIELDS},
        "name": schedule.name,
        "mapping_id": schedule.mapping_id,
        "route_set": schedule.route_set,
        "list_id": schedule.list_id,
        "backfill": schedule.backfill,
        "use_received_time": schedule.use_received_time,
        "cron": schedule.cron,
        "interval_minutes": schedule.interval_minutes,
        "retry_limit": schedule.retry_limit,
        "auth_header_name": source.auth_header_name,
    }


@dataclass
class ScheduleEdit:
    """What an edit changed (field names, never values) and what became of the feed position."""

    changed: list[str]
    position: str  # "kept", "restarted" or "" when nothing the position depends on changed
    message: str


async def update_schedule(
    db: AsyncSession, settings: Settings, schedule: Schedule, source: FeedSource, form: ScheduleForm
) -> ScheduleEdit:
    """Apply the Edit form; keep the feed position (mark, page cursor, ledger) unless told to start over."""
    problems = form.problems(stored_auth=bool(source.auth_header_encrypted))
    if problems:
        raise ScheduleError(" ".join(problems.values()))
    await _check_reachable(settings, form.url)
    await _resolve_routes(db, form, None)
    await _live_mapping(db, form.mapping_id)
    if form.position == "restart" and (aware(schedule.tick_until) or utcnow()) > utcnow():
        # The tick would write its own mark over the reset when it finishes.
        raise ScheduleError(
            "A tick is fetching right now; start over once it has finished (the ticks below update).",
            field="position",
        )
    before = _snapshot(schedule, source)
    _apply_source(source, form)
    _apply_schedule(schedule, form)
    changed = []
    if form.auth_header_remove:
        if source.auth_header_encrypted:
            changed.append("auth_header (removed)")
        source.auth_header_name = source.auth_header_encrypted = source.auth_header_hint = None
    elif form.auth_header_value:
        _store_auth(source, settings, form.auth_header_name, form.auth_header_value)
        changed.append("auth_header (new value)")
    else:  # keep the stored value, perhaps under a corrected header name
        source.auth_header_name = form.auth_header_name or None
    after = _snapshot(schedule, source)
    changed = [name for name in after if before[name] != after[name]] + changed
    now = utcnow()
    if {"cron", "interval_minutes"} & set(changed):
        schedule.next_run_at = next_after(schedule, now)
    feed_changed = [name for name in FEED_FIELDS if name in changed]
    ledger = await ledger_size(db, schedule.id or 0)
    if form.position == "restart":
        schedule.cursor_value = schedule.page_cursor = None
        await db.exec(delete(FeedRecordSeen).where(col(FeedRecordSeen.schedule_id) == schedule.id))
        position = "restarted"
        message = (
            f"Started over: the high-water mark and page cursor are cleared and {_records(ledger)} "
            "already taken are forgotten, so the next tick reads the feed from the start and sends "
            "every record again (Klaviyo drops events whose unique_id it already has)."
        )
    elif feed_changed:
        position = "kept"
        message = "Position kept: " + describe_position(schedule, source, ledger)
        if "key_field" in feed_changed and ledger:
            message += (
                " The record key changed, so the records already taken are not recognised by it: "
                "each is taken once more."
            )
    else:
        position, message = "", ""
    schedule.updated_at = source.updated_at = now
    db.add_all([schedule, source])
    await db.flush()
    return ScheduleEdit(changed, position, message)


def _records(count: int) -> str:
    return f"{count:,} record{'s' if count != 1 else ''}"


def describe_position(schedule: Schedule, source: FeedSource, ledger: int) -> str:
    """Where the next tick starts, in words, for the edit form and its outcome."""
    if source.cursor_kind == CursorKind.FIELD and schedule.cursor_value:
        start = f"the next tick asks for records from {source.cursor_field} {schedule.cursor_value} on"
    elif source.cursor_kind == CursorKind.PAGE and schedule.page_cursor:
        start = f"the next tick starts at page cursor {schedule.page_cursor}"
    else:
        start = "the next tick reads the whole feed"
    return f"{start}, and the {_records(ledger)} already taken are not sent again unless they changed."


async def ledger_size(db: AsyncSession, schedule_id: int) -> int:
    query = select(func.count()).select_from(FeedRecordSeen).where(FeedRecordSeen.schedule_id == schedule_id)
    return int((await db.exec(query)).one())


@dataclass
class DeletionPreview:
    """What deleting a schedule removes (ticks, ledger) and keeps (its runs)."""

    ticks: int
    ledger: int
    run_ids: list[int]


async def deletion_preview(db: AsyncSession, schedule: Schedule) -> DeletionPreview:
    ticks = (await db.exec(select(func.count()).where(ScheduleTick.schedule_id == schedule.id))).one()
    run_ids = (
        await db.exec(
            select(ScheduleTick.run_id)
            .where(ScheduleTick.schedule_id == schedule.id, col(ScheduleTick.run_id).is_not(None))
            .order_by(col(ScheduleTick.run_id))
        )
    ).all()
    return DeletionPreview(int(ticks), await ledger_size(db, schedule.id or 0), [r for r in run_ids if r])


async def delete_schedule(db: AsyncSession, schedule: Schedule) -> DeletionPreview:
    """Remove the schedule, its feed source, ticks and ledger; its runs (and their uploads) stay.

    Refused while a tick is fetching: taking the tick lease first means no worker is between
    fetching and writing this schedule's run, and none can start (it finds the row gone).
    """
    schedule_id = schedule.id or 0
    now = utcnow()
    taken = await db.exec(
        update(Schedule)
        .where(
            col(Schedule.id) == schedule_id,
            or_(col(Schedule.tick_until).is_(None), col(Schedule.tick_until) < now),
        )
        .values(tick_owner="deleting", tick_until=now + TICK_LEASE, enabled=False)
    )
    if taken.rowcount != 1:
        raise ScheduleError(
            "A tick of this schedule is fetching right now; delete the schedule once it has finished."
        )
    removed = await deletion_preview(db, schedule)
    for table in (FeedRecordSeen, ScheduleTick):
        await db.exec(delete(table).where(col(table.schedule_id) == schedule_id))
    source = await db.get(FeedSource, schedule.source_id)
    await db.delete(schedule)
    await db.flush()
    others = (await db.exec(select(Schedule.id).where(Schedule.source_id == schedule.source_id))).first()
    if source is not None and others is None:
        await db.delete(source)
        await db.flush()
    return removed


async def set_enabled(db: AsyncSession, schedule: Schedule, enabled: bool) -> None:
    """Enable (next run counted from now, so a long pause does not fire at once) or disable."""
    schedule.enabled = enabled
    schedule.next_run_at = next_after(schedule, utcnow()) if enabled else schedule.next_run_at
    schedule.updated_at = utcnow()
    db.add(schedule)
    await db.flush()


async def enqueue_tick(arq: ArqRedis, queue_name: str, schedule_id: int, trigger: str, key: str) -> None:
    """Queue one tick; the job id makes the same claim (or the same click) queue once."""
    job_id = f"{queue_name}:schedule:{schedule_id}:{trigger}:{key}"
    await arq.enqueue_job(RUN_SCHEDULE, schedule_id, trigger, _job_id=job_id, _queue_name=queue_name)


# ---------------------------------------------------------------- reading


@dataclass
class ScheduleRow:
    schedule: Schedule
    source: FeedSource
    mapping: Mapping | None
    last_run: SyncRun | None


async def list_schedules(db: AsyncSession) -> list[ScheduleRow]:
    schedules = list((await db.exec(select(Schedule).order_by(col(Schedule.id)))).all())
    return [await _row(db, s) for s in schedules]


async def get_schedule(db: AsyncSession, schedule_id: int) -> ScheduleRow | None:
    schedule = await db.get(Schedule, schedule_id)
    return await _row(db, schedule) if schedule else None


async def _row(db: AsyncSession, schedule: Schedule) -> ScheduleRow:
    source = await db.get(FeedSource, schedule.source_id)
    assert source is not None
    mapping = await db.get(Mapping, schedule.mapping_id)
    last_run = await db.get(SyncRun, schedule.last_run_id) if schedule.last_run_id else None
    return ScheduleRow(schedule, source, mapping, last_run)


async def recent_ticks(db: AsyncSession, schedule_id: int, limit: int = 20) -> list[ScheduleTick]:
    query = (
        select(ScheduleTick)
        .where(ScheduleTick.schedule_id == schedule_id)
        .order_by(col(ScheduleTick.id).desc())
        .limit(limit)
    )
    return list((await db.exec(query)).all())


@dataclass
class PendingRetry:
    run: SyncRun
    attempts: int
    given_up: bool


async def pending_retries(db: AsyncSession, schedule: Schedule) -> list[PendingRetry]:
    """Tick runs that failed (Klaviyo kept failing, timeouts) and are resumed on the next ticks."""
    found = []
    for key, attempts in sorted(schedule.retrying.items(), key=lambda kv: int(kv[0])):
        run = await db.get(SyncRun, int(key))
        if run is not None and run.status == RunStatus.FAILED:
            found.append(PendingRetry(run, int(attempts), int(attempts) >= schedule.retry_limit))
    return found


def feed_spec(source: FeedSource, settings: Settings) -> FeedSpec:
    headers = {}
    if source.auth_header_name and source.auth_header_encrypted:
        headers[source.auth_header_name] = decrypt_secret(settings.secret, source.auth_header_encrypted)
    return FeedSpec(
        url=source.url,
        format=source.format.value,
        records_path=source.records_path,
        headers=headers,
        cursor_kind=source.cursor_kind.value,
        cursor_field=source.cursor_field,
        cursor_param=source.cursor_param,
        key_field=source.key_field,
        next_page_path=source.next_page_path,
        page_param=source.page_param,
    )


# ---------------------------------------------------------------- the cron claim


async def claim_due(db: AsyncSession, now: datetime | None = None) -> list[tuple[int, int]]:
    """Advance every due schedule's next run time; return (id, claim) for the ones this caller won.

    The compare-and-set on ``claim_seq`` means that of two workers seeing the same due schedule,
    exactly one advances it, so a tick is queued once. A tick missed while no worker ran is due
    once: the next run time is counted from now, not from the missed time.
    """
    now = now or utcnow()
    due = (
        await db.exec(
            select(Schedule).where(
                col(Schedule.enabled).is_(True),
                col(Schedule.next_run_at).is_not(None),
                col(Schedule.next_run_at) <= now,
            )
        )
    ).all()
    claimed = []
    for schedule in due:
        # Read before the UPDATE: an ORM update refreshes the loaded object's claim_seq.
        seen, upcoming_at = schedule.claim_seq, next_after(schedule, now)
        result = await db.exec(
            update(Schedule)
            .where(col(Schedule.id) == schedule.id, col(Schedule.claim_seq) == seen)
            .values(claim_seq=seen + 1, next_run_at=upcoming_at)
        )
        if result.rowcount == 1:
            claimed.append((schedule.id or 0, seen + 1))
    await db.commit()
    return claimed


# ---------------------------------------------------------------- one tick


@dataclass
class TickContext:
    """What a tick needs from the worker that runs it."""

    sessionmaker: Any
    settings: Settings
    http: httpx.AsyncClient
    arq: ArqRedis
    owner: str


async def run_tick(ctx: TickContext, schedule_id: int, trigger: str = "cron") -> dict[str, Any]:
    """One tick: retry failed tick runs, then fetch what is new and start a run on it."""
    settings = ctx.settings
    async with ctx.sessionmaker() as db:
        schedule = await db.get(Schedule, schedule_id)
        if schedule is None:
            return {"schedule": schedule_id, "skipped": "no such schedule"}
        tick = ScheduleTick(schedule_id=schedule_id, trigger=trigger)
        if not await _take_lease(db, schedule_id, ctx.owner):
            if (await db.exec(select(Schedule.id).where(Schedule.id == schedule_id))).first() is None:
                return {"schedule": schedule_id, "skipped": "deleted"}
            await _end(
                db, schedule, tick, TickOutcome.SKIPPED, "Another tick of this schedule was still fetching."
            )
            return {"schedule": schedule_id, "outcome": "skipped"}
        await db.refresh(schedule)
        last = await db.get(SyncRun, schedule.last_run_id) if schedule.last_run_id else None
        busy = last is not None and last.status.active  # judged before this tick resumes anything
        resumed = await _resume_failed_runs(db, schedule)
        tick.retried_runs = [run.id or 0 for run in resumed]
        if busy and last is not None:
            await _end(
                db,
                schedule,
                tick,
                TickOutcome.SKIPPED,
                f"Run #{last.id} from an earlier tick was still {last.status.value}; this tick was skipped.",
                release=ctx.owner,
            )
            await _enqueue_resumed(ctx, resumed)
            return {"schedule": schedule_id, "outcome": "skipped"}
        db.add(tick)
        await db.commit()
        source = await db.get(FeedSource, schedule.source_id)
        assert source is not None
        spec = feed_spec(source, settings)
        state = FeedState(schedule.cursor_value, schedule.page_cursor)
    await _enqueue_resumed(ctx, resumed)
    try:
        fetched = await fetch_feed(ctx.http, spec, state)
    except FeedError as exc:
        async with ctx.sessionmaker() as db:
            schedule, tick = await _reload(db, schedule_id, tick.id or 0)
            await _end(db, schedule, tick, TickOutcome.FAILED, str(exc), release=ctx.owner)
        log.info("feed tick failed", schedule_id=schedule_id, error=str(exc))
        return {"schedule": schedule_id, "outcome": "failed"}

    async with ctx.sessionmaker() as db:
        schedule, tick = await _reload(db, schedule_id, tick.id or 0)
        tick.pages, tick.records_fetched = fetched.pages, fetched.fetched
        refusal = await _misfit(db, schedule, fetched.records)
        if refusal is not None:
            # Nothing is taken (no run, ledger and cursor unchanged): a fixed mapping reads them next tick.
            await _end(db, schedule, tick, TickOutcome.FAILED, refusal, release=ctx.owner)
            return {"schedule": schedule_id, "outcome": "failed"}
        unseen = await _unseen(db, schedule_id, fetched.records, source.key_field)
        fresh, ledger = unseen.records, unseen.ledger
        pruned = await _keep_ledger_current(db, schedule_id, unseen.restamp)
        forgot = (
            f" {_records(pruned)} not in the feed for {LEDGER_KEEP.days} days forgotten." if pruned else ""
        )
        tick.records_new = len(fresh)
        schedule.cursor_value, schedule.page_cursor = fetched.state.cursor_value, fetched.state.page_cursor
        if not fresh:
            note = f"{fetched.fetched} record{'s' if fetched.fetched != 1 else ''} fetched, none new.{forgot}"
            await _end(db, schedule, tick, TickOutcome.NOTHING_NEW, note, release=ctx.owner)
            return {"schedule": schedule_id, "outcome": "nothing_new"}
        try:
            upload = await _store_records(db, settings, schedule, tick, fresh)
            if schedule.route_set:
                # Each record through its event's mapping, as the route set stands at this tick.
                routing = await run_routes.resolve_route_set(
                    db, run_routes.CHOICE_PREFIX + schedule.route_set, None
                )
                run = await run_routes.start_routed_run(
                    db,
                    upload_id=upload.id or 0,
                    routing=routing,
                    dry_run=False,
                    backfill=schedule.backfill,
                    user=None,
                    source=RunSource.FEED,
                )
            else:
                run = await runs.create_run(
                    db,
                    upload_id=upload.id or 0,
                    mapping_id=schedule.mapping_id,
                    dry_run=False,
                    backfill=schedule.backfill,
                    user=None,
                    list_id=schedule.list_id,
                    source=RunSource.FEED,
                )
        except runs.RunError as exc:
            await db.rollback()
            schedule, tick = await _reload(db, schedule_id, tick.id or 0)
            await _end(
                db, schedule, tick, TickOutcome.FAILED, f"No run could be started: {exc}", release=ctx.owner
            )
            return {"schedule": schedule_id, "outcome": "failed"}
        run.summary = {**run.summary, "schedule_id": schedule_id, "tick_id": tick.id}
        await _record_ledger(db, schedule_id, ledger)
        schedule.last_run_id = run.id
        schedule.retrying = {**schedule.retrying, str(run.id): 0}
        tick.run_id = run.id
        pages = f"{fetched.pages} page{'s' if fetched.pages != 1 else ''}"
        message = f"{len(fresh)} new of {fetched.fetched} fetched ({pages}).{forgot}"
        await _end(db, schedule, tick, TickOutcome.QUEUED_RUN, message, release=ctx.owner)
    await runs.enqueue(ctx.arq, settings.queue_name, run, "feed")
    log.info("feed tick queued a run", schedule_id=schedule_id, run_id=run.id, records=len(fresh))
    return {"schedule": schedule_id, "outcome": "queued_run", "run": run.id}


async def mapping_spec(db: AsyncSession, mapping_id: int) -> Spec | None:
    """The current version of a mapping as a spec (None when gone or unreadable)."""
    mapping = await db.get(Mapping, mapping_id)
    if mapping is None or mapping.deleted:
        return None
    query = select(MappingVersion).where(
        MappingVersion.mapping_id == mapping_id, MappingVersion.version == mapping.current_version
    )
    version = (await db.exec(query)).first()
    try:
        return Spec.model_validate(version.spec) if version is not None else None
    except ValueError:
        return None


async def _misfit(db: AsyncSession, schedule: Schedule, records: list[dict[str, Any]]) -> str | None:
    """Why the schedule's mapping cannot send these records (a field it requires is missing), or None."""
    spec = await mapping_spec(db, schedule.mapping_id)
    if spec is None or not records:
        return None
    fit = check_records(spec, records, received_time=schedule.use_received_time)
    return None if fit.ok else fit.message()


async def _take_lease(db: AsyncSession, schedule_id: int, owner: str) -> bool:
    now = utcnow()
    result = await db.exec(
        update(Schedule)
        .where(
            col(Schedule.id) == schedule_id,
            or_(col(Schedule.tick_until).is_(None), col(Schedule.tick_until) < now),
        )
        .values(tick_owner=owner, tick_until=now + TICK_LEASE)
    )
    await db.commit()
    return bool(result.rowcount == 1)


async def _reload(db: AsyncSession, schedule_id: int, tick_id: int) -> tuple[Schedule, ScheduleTick]:
    schedule = await db.get(Schedule, schedule_id)
    tick = await db.get(ScheduleTick, tick_id)
    assert schedule is not None and tick is not None
    return schedule, tick


async def _end(
    db: AsyncSession,
    schedule: Schedule,
    tick: ScheduleTick,
    outcome: TickOutcome,
    message: str,
    release: str | None = None,
) -> None:
    """Record the tick's outcome on the tick and the schedule, and free the schedule for the next."""
    now = utcnow()
    tick.outcome, tick.message, tick.finished_at = outcome, message, now
    schedule.last_tick_at, schedule.last_outcome, schedule.last_message = now, outcome.value, message
    if release is not None and schedule.tick_owner == release:
        schedule.tick_owner, schedule.tick_until = None, None
    schedule.updated_at = now
    db.add_all([tick, schedule])
    await db.commit()


async def _resume_failed_runs(db: AsyncSession, schedule: Schedule) -> list[SyncRun]:
    """Resume this schedule's failed tick runs (Klaviyo kept failing) until they succeed or hit the limit."""
    retrying = dict(schedule.retrying)
    resumed = []
    for key, attempts in list(retrying.items()):
        run = await db.get(SyncRun, int(key))
        if run is None or run.status in (RunStatus.COMPLETED, RunStatus.CANCELLED):
            del retrying[key]
        elif run.status == RunStatus.FAILED and int(attempts) < schedule.retry_limit:
            await runs.resume(db, run)
            retrying[key] = int(attempts) + 1
            resumed.append(run)
    schedule.retrying = retrying
    db.add(schedule)
    await db.commit()
    return resumed


async def _enqueue_resumed(ctx: TickContext, resumed: list[SyncRun]) -> None:
    for run in resumed:
        await runs.enqueue(ctx.arq, ctx.settings.queue_name, run, f"feed-retry-{uuid.uuid4().hex[:8]}")


@dataclass
class _Unseen:
    """A fetch sorted against the ledger: records to take, and known keys to re-stamp as seen."""

    records: list[dict[str, Any]]
    ledger: dict[str, str]
    restamp: list[str]


async def _unseen(
    db: AsyncSession, schedule_id: int, records: list[dict[str, Any]], key_field: str | None
) -> _Unseen:
    """Records this schedule has not taken (or that changed since), and their ledger entries."""
    latest: dict[str, tuple[dict[str, Any], str]] = {}
    for record in records:  # a record repeated across pages counts once, in its last state
        latest[record_key(record, key_field)] = (record, record_digest(record))
    known: dict[str, tuple[str, datetime]] = {}
    keys = list(latest)
    for start in range(0, len(keys), LEDGER_CHUNK):
        chunk = keys[start : start + LEDGER_CHUNK]
        query = select(FeedRecordSeen.record_key, FeedRecordSeen.digest, FeedRecordSeen.seen_at).where(
            FeedRecordSeen.schedule_id == schedule_id, col(FeedRecordSeen.record_key).in_(chunk)
        )
        known.update({key: (digest, seen) for key, digest, seen in (await db.exec(query)).all()})
    fresh = [
        (key, record, digest)
        for key, (record, digest) in latest.items()
        if known.get(key, ("",))[0] != digest
    ]
    stale = utcnow() - LEDGER_RESTAMP
    restamp = [
        key
        for key, (_, digest) in latest.items()
        if key in known and known[key][0] == digest and (aware(known[key][1]) or stale) < stale
    ]
    return _Unseen([record for _, record, _ in fresh], {key: digest for key, _, digest in fresh}, restamp)


async def _keep_ledger_current(db: AsyncSession, schedule_id: int, restamp: list[str]) -> int:
    """Stamp unchanged records this fetch saw again, then prune entries unseen for ``LEDGER_KEEP``.

    Called only after a successful fetch, so a feed that is down for a while prunes nothing.
    Returns how many entries were pruned.
    """
    now = utcnow()
    for start in range(0, len(restamp), LEDGER_CHUNK):
        await db.exec(
            update(FeedRecordSeen)
            .where(
                col(FeedRecordSeen.schedule_id) == schedule_id,
                col(FeedRecordSeen.record_key).in_(restamp[start : start + LEDGER_CHUNK]),
            )
            .values(seen_at=now)
        )
    pruned = await db.exec(
        delete(FeedRecordSeen).where(
            col(FeedRecordSeen.schedule_id) == schedule_id, col(FeedRecordSeen.seen_at) < now - LEDGER_KEEP
        )
    )
    return int(pruned.rowcount or 0)


async def _record_ledger(db: AsyncSession, schedule_id: int, ledger: dict[str, str]) -> None:
    keys = list(ledger)
    for start in range(0, len(keys), LEDGER_CHUNK):
        chunk = keys[start : start + LEDGER_CHUNK]
        await db.exec(
            delete(FeedRecordSeen).where(
                col(FeedRecordSeen.schedule_id) == schedule_id, col(FeedRecordSeen.record_key).in_(chunk)
            )
        )
    now = utcnow()
    db.add_all(
        FeedRecordSeen(schedule_id=schedule_id, record_key=k, digest=d, seen_at=now)
        for k, d in ledger.items()
    )


async def _store_records(
    db: AsyncSession,
    settings: Settings,
    schedule: Schedule,
    tick: ScheduleTick,
    records: list[dict[str, Any]],
) -> Upload:
    """Write the new records as an NDJSON file and register it as a ready upload."""
    stored, size, digest = await asyncio.to_thread(_write_records, Path(settings.upload_dir), records)
    headers: dict[str, None] = {}
    for record in records:
        headers.update(dict.fromkeys(record))
    upload = Upload(
        filename=f"{schedule.name[:180]} · tick {tick.id}.ndjson",
        stored_as=stored,
        size_bytes=size,
        sha256=digest,
        status=UploadStatus.READY,
        encoding="utf-8",
        headers=list(headers),
        row_count=len(records),
        preview=[{k: _preview(v) for k, v in r.items()} for r in records[:PREVIEW_RECORDS]],
    )
    db.add(upload)
    await db.flush()
    return upload


def _write_records(folder: Path, records: list[dict[str, Any]]) -> tuple[str, int, str]:
    folder.mkdir(parents=True, exist_ok=True)
    stored = f"feed-{uuid.uuid4().hex}.ndjson"
    size = write_ndjson(folder / stored, records)
    digest = hashlib.sha256()
    with open(folder / stored, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return stored, size, digest.hexdigest()


def _preview(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text[:200]


def tick_owner() -> str:
    """Who holds a tick: host, process and a random part (one worker runs several jobs at once)."""
    return f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
