"""Sync runs: start, pause, resume, cancel, retry failed rows, and read progress."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import (
    KlaviyoList,
    Mapping,
    MappingVersion,
    RowError,
    RunSource,
    RunStatus,
    SyncBatch,
    SyncRun,
    Upload,
    UploadStatus,
    User,
)
from models.base import aware, utcnow
from services.targets import target_for
from sync.mapping import Mapping as MappingSpec
from sync.validation import check_mapping

SEND_RUN = "send_run"


class RunError(ValueError):
    """A run that cannot be started or changed, with the reason for the operator."""


def job_id(queue_name: str, run: SyncRun, reason: str) -> str:
    """Deterministic arq job id: the same request to run from the same point is queued once."""
    return f"{queue_name}:run:{run.id}:{reason}:{run.next_seq}"


async def enqueue(arq: ArqRedis, queue_name: str, run: SyncRun, reason: str) -> None:
    await arq.enqueue_job(SEND_RUN, run.id, _job_id=job_id(queue_name, run, reason), _queue_name=queue_name)


async def create_run(
    db: AsyncSession,
    *,
    upload_id: int,
    mapping_id: int,
    dry_run: bool,
    backfill: bool,
    user: User | None,
    list_id: str | None = None,
    source: RunSource = RunSource.UPLOAD,
    catalog_sync: bool = True,
    delete_missing: bool = False,
) -> SyncRun:
    """A queued run of an upload through the mapping's current version.

    ``list_id`` (profile runs) adds every imported profile to that Klaviyo list; ``source`` says
    where the file came from (a schedule's feed tick stores its records as an upload too).
    """
    upload = await db.get(Upload, upload_id)
    if upload is None:
        raise RunError(f"Upload #{upload_id} does not exist.")
    if upload.status != UploadStatus.READY:
        raise RunError(f"Upload #{upload_id} is {upload.status.value}; only a checked, ready file can run.")
    mapping = await db.get(Mapping, mapping_id)
    if mapping is None or mapping.deleted:
        raise RunError(f"Mapping #{mapping_id} does not exist.")
    if not dry_run and target_for(mapping.target_kind) is None:
        raise RunError(f"Sending {mapping.target_kind} mappings is not available yet; a dry run is.")
    version = (
        await db.exec(
            select(MappingVersion).where(
                MappingVersion.mapping_id == mapping.id, MappingVersion.version == mapping.current_version
            )
        )
    ).one()
    options: dict[str, Any] = {"backfill": backfill}
    if list_id and list_id.strip():
        options["list_id"] = list_id.strip()
    if mapping.target_kind.startswith("catalog_"):
        # Incremental unless turned off (the mapping's mode then applies to every row); delete_missing
        # also deletes entries the last sync sent that the source no longer has.
        options.update(catalog_sync=catalog_sync, delete_missing=catalog_sync and delete_missing)
    spec_list = str((version.spec.get("target") or {}).get("list_id") or "").strip() or None
    if mapping.target_kind == "list_membership" and not dry_run and not (options.get("list_id") or spec_list):
        raise RunError("A list membership run needs a list: choose one, or start it from the list's page.")
    if not options.get("list_id") and spec_list:
        # The requests go to the mapping's list: the run records it, so its page and audit say so.
        options.update(list_id=spec_list, list_from="mapping")
    if options.get("list_id"):
        options["list_name"] = await list_name(db, options["list_id"])
    run = SyncRun(
        kind=mapping.target_kind,
        source=source,
        status=RunStatus.QUEUED,
        dry_run=dry_run,
        upload_id=upload.id,
        mapping_version_id=version.id,
        options=options,
        summary={"mapping_issues": mapping_notes(version)},
        total_rows=upload.row_count,
        created_by=user.id if user else None,
    )
    db.add(run)
    await db.flush()
    return run


async def list_name(db: AsyncSession, klaviyo_id: str) -> str | None:
    """The synced name of a Klaviyo list, if the Lists page knows it."""
    query = select(KlaviyoList.name).where(KlaviyoList.klaviyo_id == klaviyo_id)
    return (await db.exec(query)).first()


def mapping_notes(version: MappingVersion) -> list[dict[str, Any]]:
    """What the mapping alone says about the run (e.g. profiles identified by external_id only)."""
    try:
        spec = MappingSpec.model_validate(version.spec)
    except ValueError:
        return []
    return [issue.as_dict() for issue in check_mapping(spec)]


async def failed_rows(db: AsyncSession, run_id: int) -> list[int]:
    """Distinct source rows of a run that ended in an error (not warnings)."""
    query = (
        select(RowError.row_number)
        .where(RowError.run_id == run_id, RowError.severity == "error", RowError.row_number > 0)
        .distinct()
        .order_by(col(RowError.row_number))
    )
    return list((await db.exec(query)).all())


async def count_failed_rows(db: AsyncSession, run_id: int) -> int:
    """How many source rows of a run ended in an error (each row once, whatever its errors)."""
    query = select(func.count(func.distinct(RowError.row_number))).where(
        RowError.run_id == run_id, RowError.severity == "error", RowError.row_number > 0
    )
    return int((await db.exec(query)).one())


# RowError.severity of a row skipped on purpose (a filter, no consent, an empty skip field).
SKIPPED = "skipped"


async def count_skipped_rows(db: AsyncSession, run_id: int) -> int:
    """How many source rows of a run were skipped on purpose (each row once)."""
    query = select(func.count(func.distinct(RowError.row_number))).where(
        RowError.run_id == run_id, RowError.severity == SKIPPED, RowError.row_number > 0
    )
    return int((await db.exec(query)).one())


async def skipped_by_rule(db: AsyncSession, run_id: int) -> dict[str, int]:
    """Skipped rows by reason (``skipped_filter``, ``skipped_no_consent``, ``skipped_empty``)."""
    query = (
        select(RowError.rule, func.count(func.distinct(RowError.row_number)))
        .where(RowError.run_id == run_id, RowError.severity == SKIPPED, RowError.row_number > 0)
        .group_by(RowError.rule)
    )
    return {rule: int(count) for rule, count in (await db.exec(query)).all()}


async def failed_orders(db: AsyncSession, run_id: int) -> dict[str, list[int]]:
    """The grouped records (orders) of a run that failed, each with the source rows it had."""
    query = (
        select(RowError.group_key, RowError.row_number)
        .where(
            RowError.run_id == run_id,
            RowError.severity == "error",
            col(RowError.group_key).is_not(None),
            RowError.row_number > 0,
        )
        .distinct()
    )
    orders: dict[str, list[int]] = {}
    for key, row in (await db.exec(query)).all():
        assert key is not None  # the query leaves out rows without a group
        orders.setdefault(key, []).append(row)
    return {key: sorted(rows) for key, rows in orders.items()}


async def retry_failed(db: AsyncSession, parent: SyncRun, user: User | None) -> SyncRun:
    """A new run over exactly the failed rows, through the mapping's current version."""
    if not parent.status.finished:
        raise RunError("Wait until the run has finished before retrying its failed rows.")
    rows = await failed_rows(db, parent.id or 0)
    if not rows:
        raise RunError("This run has no failed rows to retry.")
    version = await db.get(MappingVersion, parent.mapping_version_id)
    assert version is not None
    mapping = await db.get(Mapping, version.mapping_id)
    assert mapping is not None
    current = (
        await db.exec(
            select(MappingVersion).where(
                MappingVersion.mapping_id == mapping.id, MappingVersion.version == mapping.current_version
            )
        )
    ).one()
    run = SyncRun(
        kind=parent.kind,
        source=RunSource.RETRY,
        status=RunStatus.QUEUED,
        dry_run=False,
        upload_id=parent.upload_id,
        mapping_version_id=current.id,
        parent_run_id=parent.id,
        only_rows=rows,
        options=dict(parent.options),
        summary={"mapping_issues": mapping_notes(current)},
        total_rows=len(rows),
        created_by=user.id if user else None,
    )
    db.add(run)
    await db.flush()
    return run


async def request_pause(db: AsyncSession, run: SyncRun) -> None:
    """Ask the worker to stop after the batches in flight; a queued run pauses at once."""
    await _transition(db, run, {RunStatus.QUEUED: RunStatus.PAUSED, RunStatus.RUNNING: RunStatus.PAUSING})


async def request_cancel(db: AsyncSession, run: SyncRun) -> None:
    """Stop for good after the batches in flight (what was sent stays sent)."""
    await _transition(
        db,
        run,
        {
            RunStatus.QUEUED: RunStatus.CANCELLED,
            RunStatus.PAUSED: RunStatus.CANCELLED,
            RunStatus.FAILED: RunStatus.CANCELLED,
            RunStatus.RUNNING: RunStatus.CANCELLING,
            RunStatus.PAUSING: RunStatus.CANCELLING,
        },
    )


async def resume(db: AsyncSession, run: SyncRun) -> None:
    """Queue a paused or failed run again; it continues from its last committed batch."""
    await _transition(db, run, {RunStatus.PAUSED: RunStatus.QUEUED, RunStatus.FAILED: RunStatus.QUEUED})
    run.error_message = None
    run.finished_at = None


async def _transition(db: AsyncSession, run: SyncRun, moves: dict[RunStatus, RunStatus]) -> None:
    # Conditional UPDATE: the worker may change the status at the same moment; the database decides.
    target = moves.get(run.status)
    if target is None:
        raise RunError(f"A {run.status.value} run cannot do that.")
    result = await db.exec(
        update(SyncRun)
        .where(col(SyncRun.id) == run.id, col(SyncRun.status) == run.status)
        .values(status=target, updated_at=utcnow(), finished_at=utcnow() if target.finished else None)
    )
    if result.rowcount != 1:
        await db.refresh(run)
        raise RunError(f"The run changed to {run.status.value} meanwhile; look again.")
    await db.refresh(run)


@dataclass
class Progress:
    """What the run page's status partial shows."""

    percent: float
    rows_done: int
    total: int | None
    items_per_s: float
    eta_s: float | None
    elapsed_s: float


def progress(run: SyncRun, now: datetime | None = None) -> Progress:
    """Percent, throughput and ETA from the run's committed counters."""
    now = now or utcnow()
    total = run.total_rows
    done = min(run.rows_read, total) if total else run.rows_read
    started = aware(run.started_at)
    end = aware(run.finished_at) or now
    elapsed = max((end - started).total_seconds(), 0.001) if started else 0.0
    rate = (run.items_sent if not run.dry_run else run.rows_read) / elapsed if elapsed else 0.0
    row_rate = done / elapsed if elapsed else 0.0
    eta = (total - done) / row_rate if total and row_rate and not run.status.finished else None
    percent = 100.0 if run.status == RunStatus.COMPLETED else (100.0 * done / total if total else 0.0)
    return Progress(round(percent, 1), done, total, rate, eta, elapsed)


# A filtered page looks at most this many ids back: a filter that matches little (or nothing)
# must not walk a million runs. The page then offers to look further back.
SCAN_WINDOW = 100_000


@dataclass
class RunPage:
    runs: list[SyncRun]
    next_before: int | None  # where the next page starts (exclusive); None at the first run
    scanned_to: int | None = None  # set when the window ran out before the page filled


async def list_runs(
    db: AsyncSession,
    *,
    status: str | None = None,
    kind: str | None = None,
    source: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> RunPage:
    """Newest first, keyset-paginated by id; a filtered page scans a bounded window of ids."""
    query = select(SyncRun).order_by(col(SyncRun.id).desc()).limit(limit)
    filtered = False
    if status:
        query, filtered = query.where(SyncRun.status == RunStatus(status)), True
    if kind:
        query, filtered = query.where(SyncRun.kind == kind), True
    if source:
        query, filtered = query.where(SyncRun.source == RunSource(source)), True
    if since:
        query, filtered = query.where(col(SyncRun.created_at) >= since), True
    if until:
        query, filtered = query.where(col(SyncRun.created_at) < until), True
    if before_id:
        query = query.where(col(SyncRun.id) < before_id)
    floor = None
    if filtered:
        top = before_id or ((await db.exec(select(func.max(SyncRun.id)))).one() or 0) + 1
        floor = max(top - SCAN_WINDOW, 0)
        query = query.where(col(SyncRun.id) >= floor)
    items = list((await db.exec(query)).all())
    if len(items) == limit:
        return RunPage(items, items[-1].id)
    if floor:  # the window ran out: older runs may still match
        return RunPage(items, floor, scanned_to=floor)
    return RunPage(items, None)


async def active_runs(db: AsyncSession, limit: int = 10) -> list[SyncRun]:
    """Runs queued or in progress, oldest first (what the Overview shows)."""
    active = RunStatus.active_states()
    query = select(SyncRun).where(col(SyncRun.status).in_(active)).order_by(col(SyncRun.id)).limit(limit)
    return list((await db.exec(query)).all())


@dataclass(frozen=True)
class RunNames:
    """What a run read: the file's name and the mapping's name and version."""

    file: str | None
    mapping: str | None
    version: int | None


async def run_names(db: AsyncSession, page: list[SyncRun]) -> dict[int, RunNames]:
    """The file and mapping of each run of a page, in one query."""
    ids = [r.id for r in page if r.id is not None]
    if not ids:
        return {}
    query = (
        select(SyncRun.id, Upload.filename, Mapping.name, MappingVersion.version)
        .outerjoin(Upload, col(Upload.id) == col(SyncRun.upload_id))
        .outerjoin(MappingVersion, col(MappingVersion.id) == col(SyncRun.mapping_version_id))
        .outerjoin(Mapping, col(Mapping.id) == col(MappingVersion.mapping_id))
        .where(col(SyncRun.id).in_(ids))
    )
    return {
        run_id: RunNames(file, mapping, version)
        for run_id, file, mapping, version in (await db.exec(query)).all()
        if run_id is not None
    }


# Grouped errors of runs whose counters have not moved since: a finished run with half a million
# errors costs ~150 ms to group, once per web process instead of on every view.
_GROUPS: OrderedDict[tuple[Any, ...], list[dict[str, Any]]] = OrderedDict()
GROUPS_CACHED = 256


async def errors_by_rule(db: AsyncSession, run: SyncRun | int) -> list[dict[str, Any]]:
    """Errors and warnings grouped by rule: the rows they fail, the events they stopped, example rows.

    An order's error lands on each of its rows once, so ``count`` (rows) and ``events`` differ
    for grouped records.
    Given the run itself, the answer is cached until the run's counters or status change.
    """
    if isinstance(run, int):
        return await _errors_by_rule(db, run)
    key = (str(getattr(db.get_bind(), "url", "")), run.id, run.status, run.rows_failed, run.updated_at)
    cached = _GROUPS.get(key)
    if cached is None:
        cached = await _errors_by_rule(db, run.id or 0)
        _GROUPS[key] = cached
        while len(_GROUPS) > GROUPS_CACHED:
            _GROUPS.popitem(last=False)
    else:
        _GROUPS.move_to_end(key)
    return cached


async def _errors_by_rule(db: AsyncSession, run_id: int) -> list[dict[str, Any]]:
    query = (
        select(  # type: ignore[call-overload]  # sqlmodel's select() is typed for four columns at most
            RowError.rule,
            RowError.stage,
            RowError.severity,
            func.count(func.distinct(RowError.row_number)),
            func.sum(RowError.events),
        )
        .where(RowError.run_id == run_id)
        .group_by(RowError.rule, RowError.stage, RowError.severity)
    )
    groups = []
    for rule, stage, severity, count, events in (await db.exec(query)).all():
        where = (
            RowError.run_id == run_id,
            RowError.rule == rule,
            RowError.stage == stage,
            RowError.severity == severity,
        )
        examples = (
            await db.exec(
                select(RowError.row_number)
                .where(*where)
                .distinct()
                .order_by(col(RowError.row_number))
                .limit(5)
            )
        ).all()
        message = (
            await db.exec(select(RowError.message).where(*where).order_by(col(RowError.row_number)).limit(1))
        ).first()
        groups.append(
            {
                "severity": severity,
                "stage": stage,
                "rule": rule,
                "count": count,
                "events": int(events or 0),
                "message": message or "",
                "examples": list(examples),
            }
        )
    return sorted(groups, key=lambda g: -g["count"])


async def batch_page(
    db: AsyncSession, run_id: int, before_seq: int | None = None, limit: int = 20
) -> list[SyncBatch]:
    """A run's batches, newest first, keyset-paginated by seq (the (run_id, seq) unique index)."""
    query = select(SyncBatch).where(SyncBatch.run_id == run_id)
    if before_seq is not None:
        query = query.where(col(SyncBatch.seq) < before_seq)
    return list((await db.exec(query.order_by(col(SyncBatch.seq).desc()).limit(limit))).all())
