"""Job: stream a run's source through its mapping and send the items to Klaviyo, batch by batch.

The database is the ledger. Every item gets an ordinal in the run's deterministic item stream;
a batch's ordinal range is committed (status in_flight) before it is sent, and marked sent with
its outcome after. A worker that dies leaves in_flight batches; whoever takes the run over
rebuilds exactly those items from the source and sends them again (Klaviyo drops the repeats by
unique_id), then continues after the last committed batch. So no row is lost and none is stored
twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import func, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from klaviyo import endpoints as ep
from klaviyo.batching import Batch, Batcher, RowRejection, batches
from klaviyo.client import KlaviyoClient
from klaviyo.errors import AccessDenied, KlaviyoError
from klaviyo.jobs import ROW_UNKNOWN, UNCONFIRMED, settle
from klaviyo.limiter import RateLimiter
from klaviyo.retry import AttemptStats
from klaviyo.sender import BatchOutcome, send_batch
from models import (
    BatchStatus,
    MappingVersion,
    RowError,
    RunStatus,
    SyncBatch,
    SyncRun,
    Upload,
)
from models.base import utcnow
from services import catalog, run_routes
from services.accounts import get_account, klaviyo_target
from services.runs import SKIPPED, count_failed_rows, count_skipped_rows, failed_orders, skipped_by_rule
from services.targets import CATALOG_ENDPOINTS, SendTarget, target_for
from sync.feeds import RecordFileReader, is_record_file
from sync.issues import SKIPPED_EMPTY, Issue, RuleError
from sync.mapping import Mapping as MappingSpec
from sync.pipeline import ORDER_INCOMPLETE, OrderLayout, Pipeline, RetryOrders, RowResult, row_failures
from sync.readers import CsvReader, SourceError
from sync.routing import UNROUTED, UNROUTED_SEVERITY, RoutedPipeline
from sync.verification import tally_events
from workers.catalog_routes import CatalogRouter, Closed
from workers.check_connection import INTERACTIVE_RETRY
from workers.heartbeat import worker_name

log = structlog.get_logger(__name__)
WORKING = RunStatus.active_states()
YIELD_EVERY = 100
ROW_CACHE = 20_000  # source rows kept in memory to attach their values to errors
# Grouped orders whose rows are remembered while their items are out, so an error Klaviyo reports
# for one of the order's events lands on every row of the order.
GROUP_CACHE = 200_000
# Warnings about something left out of what a row sends, or about rows that name the same profile,
# are recorded on the row itself (the error CSV then lists whose phone was dropped, and which rows
# share an email); other warnings are only counted in the run's summary.
ROW_WARNINGS = frozenset(
    {"phone_dropped", "duplicate_email", "duplicate_phone", "duplicate_external_id", UNROUTED}
)
# Warnings about rows Klaviyo accepts but never keeps (reserved test domains): the run's headline
# counts their items as "accepted but Klaviyo will not store".
NOT_STORED = frozenset({"example_address"})


class StopRun(Exception):
    """The run must end now with this status and message."""

    def __init__(self, status: RunStatus, message: str | None = None) -> None:
        super().__init__(message or status.value)
        self.status = status
        self.message = message


def _column_of(pointer: str | None) -> str | None:
    if not pointer:
        return None
    last = pointer.rstrip("/").rsplit("/", 1)[-1]
    return None if last.isdigit() else last


@dataclass
class _StreamState:
    """Where the stream stands: ordinals, rows, and errors not yet committed."""

    next_ordinal: int = 0  # items below this are in committed batches
    cursor_row: int = 0  # errors of rows up to this are recorded
    ordinal: int = 0
    batch_first: int = 0
    row: int = 0
    rows_seen: int = 0
    items: int = 0
    batches: int = 0
    skipped: int = 0  # skipped rows not yet committed
    errors: list[RowError] = field(default_factory=list)
    last_checkpoint: float = field(default_factory=time.monotonic)


class RunExecutor:
    """Drives one run while holding its lease; one instance per job."""

    def __init__(self, ctx: dict[str, Any], run_id: int) -> None:
        self.ctx = ctx
        self.settings = ctx["settings"]
        self.sessionmaker = ctx["sessionmaker"]
        self.run_id = run_id
        self.owner = f"{worker_name()}:{uuid.uuid4().hex[:6]}"
        self.stop_status: RunStatus | None = None
        self.fatal: BaseException | None = None
        self.row_cache: OrderedDict[int, dict[str, str]] = OrderedDict()
        self.groups: OrderedDict[int, tuple[tuple[int, ...], str]] = OrderedDict()
        self.state = _StreamState()
        self.target = SendTarget(ep.BULK_EVENTS)
        self.envelope: dict[str, Any] = {}
        self.path_params: dict[str, str] | None = None
        self.warning_counts: dict[str, int] = {}
        self.summary_warnings: dict[str, dict[str, Any]] = {}
        # Catalog runs in sync mode: entries routed to create, update or delete jobs.
        self.router: CatalogRouter | None = None
        self.catalog_delete_skipped: str | None = None
        # Batches open at once (sent or waiting for their job to settle), and requests at once.
        self.in_flight = self.settings.send_concurrency
        self.send_gate = asyncio.Semaphore(self.settings.send_concurrency)
        self.job_seconds: float | None = None  # how long this run's bulk jobs take to settle (moving average)
        self.paced_polls = False  # first job read timed by job_seconds (catalog runs)
        self.tasks: set[asyncio.Task[None]] = set()  # batches being sent or settling
        self.not_stored: dict[int, int] = {}  # row -> its items Klaviyo will not keep
        self.timezone: str | None = None  # the account's, for the days of accepted events

    # -- lease ------------------------------------------------------------------------------

    async def _take_lease(self, db: AsyncSession) -> bool:
        now = utcnow()
        result = await db.exec(
            update(SyncRun)
            .where(
                col(SyncRun.id) == self.run_id,
                col(SyncRun.status).in_(WORKING),
                or_(
                    col(SyncRun.lease_until).is_(None),
                    col(SyncRun.lease_until) < now,
                    col(SyncRun.lease_owner) == self.owner,
                ),
            )
            .values(
                lease_owner=self.owner, lease_until=now + timedelta(seconds=self.settings.run_lease_seconds)
            )
        )
        await db.commit()
        return bool(result.rowcount == 1)

    async def _renew_forever(self) -> None:
        """Keep the lease and watch for pause/cancel requests from the UI."""
        interval = self.settings.run_lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            async with self.sessionmaker() as db:
                result = await db.exec(
                    update(SyncRun)
                    .where(col(SyncRun.id) == self.run_id, col(SyncRun.lease_owner) == self.owner)
                    .values(lease_until=utcnow() + timedelta(seconds=self.settings.run_lease_seconds))
                )
                status = (await db.exec(select(SyncRun.status).where(SyncRun.id == self.run_id))).one()
                await db.commit()
            if result.rowcount != 1:
                self.fatal = StopRun(RunStatus.FAILED, "Another worker took this run over.")
            if status in (RunStatus.PAUSING, RunStatus.CANCELLING):
                self.stop_status = RunStatus.PAUSED if status == RunStatus.PAUSING else RunStatus.CANCELLED

    # -- the run -----------------------------------------------------------------------------

    async def execute(self) -> dict[str, Any]:
        async with self.sessionmaker() as db:
            if not await self._take_lease(db):
                return {"run": self.run_id, "skipped": "another worker holds it, or it is not runnable"}
            run = await db.get(SyncRun, self.run_id)
            assert run is not None
            if run.status == RunStatus.QUEUED:
                run.status = RunStatus.RUNNING
            run.started_at = run.started_at or utcnow()
            db.add(run)
            await db.commit()
        renewer = asyncio.create_task(self._renew_forever())
        try:
            await self._work()
            final, message = self.stop_status or RunStatus.COMPLETED, None
        except StopRun as stop:
            final, message = stop.status, stop.message
        except AccessDenied as exc:
            final, message = (
                RunStatus.FAILED,
                (
                    f"Klaviyo refused the key ({exc}). The run stopped so as not to hammer Klaviyo; "
                    "fix the key on the Connection page, then resume."
                ),
            )
        except SourceError as exc:
            final, message = RunStatus.FAILED, f"The source file cannot be read: {exc}"
        except KlaviyoError as exc:
            final, message = (
                RunStatus.FAILED,
                (
                    f"Klaviyo kept failing ({exc}); what was sent is recorded. "
                    "Resume to continue where it stopped."
                ),
            )
        finally:
            await self._close_tasks()
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
        await self._finish(final, message)
        return {"run": self.run_id, "status": final.value}

    async def _load(self) -> tuple[SyncRun, MappingSpec, Upload]:
        async with self.sessionmaker() as db:
            run = await db.get(SyncRun, self.run_id)
            version = await db.get(MappingVersion, run.mapping_version_id) if run else None
            upload = await db.get(Upload, run.upload_id) if run and run.upload_id else None
            if run is None or version is None or upload is None:
                raise StopRun(RunStatus.FAILED, "The run's mapping or upload no longer exists.")
            return run, MappingSpec.model_validate(version.spec), upload

    async def _client(self) -> KlaviyoClient:
        async with self.sessionmaker() as db:
            account = await get_account(db)
            target = klaviyo_target(account, self.settings)
            self.timezone = account.timezone
        limiter = RateLimiter(self.ctx["redis"], time_scale=self.settings.klaviyo_time_scale)
        client = KlaviyoClient(
            target.api_key, base_url=target.base_url, limiter=limiter, http=self.ctx["http"]
        )
        # Each run takes its own turns at the shared limiter, so a big backfill cannot starve a small run.
        return client.for_run(f"run:{self.run_id}")

    async def _work(self) -> None:
        run, spec, upload = await self._load()
        target = target_for(run.kind)
        if target is None and not run.dry_run:
            raise StopRun(RunStatus.FAILED, f"Sending {run.kind} mappings is not available yet.")
        # A dry run of a kind we cannot send yet still checks every row; batches are only counted.
        target = target or SendTarget(ep.BULK_EVENTS)
        client = None if run.dry_run else await self._client()
        endpoint = target.endpoint_of(run, spec)
        backfill = bool(run.options.get("backfill", True))
        # Each record through the mapping of its event: one named by another event is never mapped.
        async with self.sessionmaker() as db:
            pipeline = await run_routes.run_pipeline(db, run, spec)
        spec = spec.model_copy(update={"options": spec.options.model_copy(update={"backfill": backfill})})
        self.target = target
        self.envelope = {
            "relationships": target.relationships(run, spec),
            "attributes": target.attributes(run, spec),
        }
        self.path_params = target.path_params(run, spec)
        if run.kind in CATALOG_ENDPOINTS:
            # A catalog job takes seconds to settle: keep many open (Klaviyo allows 500 in flight)
            # while still sending at most SEND_CONCURRENCY requests at a time.
            self.in_flight = max(self.settings.catalog_jobs_in_flight, self.settings.send_concurrency)
            self.paced_polls = True
        path = Path(self.settings.upload_dir) / upload.stored_as
        # A schedule's feed tick stores its records as NDJSON; every other upload is a CSV.
        reader: CsvReader | RecordFileReader = (
            RecordFileReader(path)
            if is_record_file(upload.stored_as)
            else CsvReader(path, encoding=upload.encoding, delimiter=upload.delimiter)
        )
        only = set(run.only_rows) if run.only_rows is not None else None
        orders: RetryOrders | OrderLayout | None = None
        if pipeline.order_builder is not None:
            if only is not None:
                # A retry of orders takes every row of each failed order, found by its order id.
                orders = await self._retry_orders(run, pipeline, upload, path, only)
                only = orders.rows
            else:
                orders = await self._order_layout(pipeline, upload, path)

        # What earlier attempts committed: batches still in flight are rebuilt and sent again.
        async with self.sessionmaker() as db:
            # A failed batch was closed unfinished when its run failed: sent again like one in flight.
            query = select(SyncBatch).where(
                SyncBatch.run_id == self.run_id,
                col(SyncBatch.status).in_((BatchStatus.IN_FLIGHT, BatchStatus.FAILED)),
            )
            inflight = list((await db.exec(query.order_by(col(SyncBatch.seq)))).all())
            if catalog.syncs(run, spec):
                inflight = await self._start_catalog_sync(db, run, inflight)
        resend: dict[int, list[tuple[int, Any]]] = {b.id or 0: [] for b in inflight}
        self.state = _StreamState(next_ordinal=run.next_ordinal, cursor_row=run.cursor_row)
        state = self.state
        batcher = Batcher(endpoint, start_seq=run.next_seq, **self.envelope)
        tasks = self.tasks

        with reader:
            for result in pipeline.run(self._rows(reader, only)):
                state.rows_seen += len(result.rows) or 1
                if state.rows_seen % YIELD_EVERY == 0:
                    # Mapping is CPU work; let finished requests and limiter turns through meanwhile.
                    await asyncio.sleep(0)
                state.row = max(result.rows or (result.row_ref,))
                if orders is not None:
                    result = orders.whole(result)
                if result.key is not None and result.items:
                    self._remember_group(result)
                if result.row_ref > state.cursor_row:
                    self._record_issues(result)
                    self._note_not_stored(result.warnings, result.row_ref, len(result.items))
                for item in result.items:
                    if self.router is not None:
                        await self._route(run, reader, result.row_ref, item, tasks, client)
                        continue
                    if state.ordinal < state.next_ordinal:
                        for record in inflight:
                            if record.first_ordinal <= state.ordinal <= record.last_ordinal:
                                resend[record.id or 0].append((result.row_ref, item))
                        state.ordinal += 1
                        continue
                    state.items += 1
                    closed = batcher.add(result.row_ref, item)
                    if closed is not None:
                        await self._checkpoint(
                            run, reader, closed, state.ordinal - 1, tasks, client, endpoint
                        )
                        state.batch_first = state.ordinal
                    state.ordinal += 1
                if resend and state.ordinal >= state.next_ordinal:
                    await self._resend(tasks, client, endpoint, inflight, resend)
                    resend = {}
                if time.monotonic() - state.last_checkpoint > 1.0:
                    await self._checkpoint(run, reader, None, 0, tasks, client, endpoint)
                if len(tasks) >= self.in_flight:
                    await self._drain(tasks, until=self.in_flight - 1)
                if self.fatal is not None:
                    raise self.fatal
                if self.stop_status is not None:
                    await self._drain(tasks, until=0)
                    return
            if self.router is not None:
                await self._finish_catalog_sync(run, reader, tasks, client)
                await self._drain(tasks, until=0)
                return
            if isinstance(orders, RetryOrders):
                self._record_lost(orders)
            if resend:
                await self._resend(tasks, client, endpoint, inflight, resend)
            last = batcher.flush()
            if last is not None and not last.items:
                state.errors.extend(self._rejection_errors(last.rejected, None))
                last = None
            await self._checkpoint(run, reader, last, state.ordinal - 1, tasks, client, endpoint)
        await self._drain(tasks, until=0)

    # -- catalog sync -------------------------------------------------------------------------

    async def _start_catalog_sync(
        self, db: AsyncSession, run: SyncRun, inflight: list[SyncBatch]
    ) -> list[SyncBatch]:
        """Load what earlier syncs left in Klaviyo; a resumed sync decides every entry again."""
        await self._learn_account(db)
        scope, plan = await catalog.load_sync(db, run)
        self.router = CatalogRouter(
            plan, scope, CATALOG_ENDPOINTS[run.kind], start_seq=run.next_seq, keep=not run.dry_run
        )
        # The state table is this mode's ledger: entries whose job settled are skipped, the rest
        # (batches left in flight included) are decided and sent again, so no ordinal replay.
        if inflight:
            await db.exec(
                update(SyncBatch)
                .where(col(SyncBatch.id).in_([b.id for b in inflight]))
                .values(status=BatchStatus.FAILED)
            )
            await db.commit()
        run.next_ordinal = 0
        return []

    async def _learn_account(self, db: AsyncSession) -> None:
        """Catalog state belongs to the Klaviyo account the key opens: learn its id before the first
        sync, so a later connection test finds the state where the sync left it."""
        account = await get_account(db)
        if account.klaviyo_account_id:
            return
        try:
            target = klaviyo_target(account, self.settings)
            client = KlaviyoClient(
                target.api_key, base_url=target.base_url, http=self.ctx["http"], retry=INTERACTIVE_RETRY
            )
            found = await client.get_account()
        except Exception as exc:  # a refused key, or one this SECRET_KEY cannot decrypt: the run says so
            # The sync keeps its state under the placeholder; the id, once learned, adopts it.
            log.warning("account id not learned", run_id=self.run_id, error=str(exc))
            return
        await catalog.learn_account_id(db, account, found.get("id"))
        await db.commit()

    async def _route(
        self,
        run: SyncRun,
        reader: CsvReader | RecordFileReader,
        row_ref: int,
        item: Any,
        tasks: set[asyncio.Task[None]],
        client: KlaviyoClient | None,
    ) -> None:
        """Send one catalog entry to the job it needs (or nowhere when Klaviyo has it as it is)."""
        assert self.router is not None
        state = self.state
        try:
            sent, closed = self.router.add(row_ref, item)
        except RuleError as error:
            if row_ref > state.cursor_row:
                state.errors.append(self._row_error(error.to_issue(), row_ref, "mapping"))
            return
        state.items += int(sent)
        if closed is not None:
            await self._checkpoint_closed(run, reader, closed, tasks, client)

    async def _checkpoint_closed(
        self,
        run: SyncRun,
        reader: CsvReader | RecordFileReader,
        closed: Closed,
        tasks: set[asyncio.Task[None]],
        client: KlaviyoClient | None,
    ) -> None:
        if not closed.batch.items:
            self.state.errors.extend(self._rejection_errors(closed.batch.rejected, None))
            return
        self.state.batch_first = closed.first
        await self._checkpoint(run, reader, closed.batch, closed.last, tasks, client, closed.endpoint)

    async def _finish_catalog_sync(
        self,
        run: SyncRun,
        reader: CsvReader | RecordFileReader,
        tasks: set[asyncio.Task[None]],
        client: KlaviyoClient | None,
    ) -> None:
        """Send what is left of each job, then (when enabled and safe) delete entries gone from the source."""
        assert self.router is not None
        await self._checkpoint(run, reader, None, 0, tasks, client, self.router.endpoints["create"])
        reason = catalog.deletes_missing(run)
        if reason is None and not self.router.plan.seen:
            reason = "the source has no entries, and an empty file must not empty the catalog"
        if reason is None:
            async with self.sessionmaker() as db:
                if await catalog.has_source_errors(db, self.run_id):
                    reason = "some rows failed to read or map, so the source is not known to be complete"
        self.catalog_delete_skipped = reason
        closed = [] if reason else self.router.add_deletes()
        for batch in [*closed, *self.router.flush()]:
            await self._checkpoint_closed(run, reader, batch, tasks, client)
            if len(tasks) >= self.in_flight:
                await self._drain(tasks, until=self.in_flight - 1)
        await self._checkpoint(run, reader, None, 0, tasks, client, self.router.endpoints["create"])

    async def _adopt_existing(
        self, client: KlaviyoClient, seq: int, outcome: BatchOutcome
    ) -> tuple[BatchOutcome, set[int]]:
        """Creates refused because Klaviyo already has the entry (made by another tool, or a job
        whose outcome a crash lost) are sent again as updates; returns the rows updated so."""
        assert self.router is not None
        updates = self.router.duplicates(seq, outcome.rejected)
        if not updates:
            return outcome, set()
        endpoint = self.router.endpoints["update"]
        batcher = Batcher(endpoint)
        for row_ref, body in updates:
            batcher.add(row_ref, body)
        batch = batcher.flush()
        assert batch is not None
        prefix, suffix = endpoint.envelope_parts()
        again = await send_batch(client, endpoint, batch, prefix=prefix, suffix=suffix)
        scale = self.settings.klaviyo_time_scale
        again = await settle(client, endpoint, again, first_delay=0.5 / scale, max_delay=15.0 / scale)
        retried = {row_ref for row_ref, _ in updates}
        outcome.rejected = [r for r in outcome.rejected if r.row_ref not in retried] + again.rejected
        outcome.accepted.extend(again.accepted)
        outcome.attempts += again.attempts
        outcome.rate_limited += again.rate_limited
        return outcome, set(again.accepted)

    async def _retry_orders(
        self,
        run: SyncRun,
        pipeline: Pipeline | RoutedPipeline,
        upload: Upload,
        path: Path,
        only: set[int],
    ) -> RetryOrders:
        """Every row of the orders a retry takes, and what each order must hold to be sent whole."""
        parent: dict[str, list[int]] = {}
        if run.parent_run_id is not None and not run.options.get("unrouted_of"):
            async with self.sessionmaker() as db:
                parent = await failed_orders(db, run.parent_run_id)

        read = self._reopen(upload, path)
        keys = set(parent)
        with read() as reader:
            for count, (number, row) in enumerate(reader):
                if number in only:
                    key = pipeline.order_key(row)
                    if key is not None:
                        keys.add(key)
                if count % 1000 == 0:
                    await asyncio.sleep(0)
        plan = RetryOrders(set(only), parent)
        with read() as reader:
            for count, (number, row) in enumerate(reader):
                key = pipeline.order_key(row)
                if key in keys and pipeline.groups(row):
                    plan.add(str(key), number)
                if count % 1000 == 0:
                    await asyncio.sleep(0)
        if len(plan.rows) != run.total_rows:
            async with self.sessionmaker() as db:
                await db.exec(
                    update(SyncRun).where(col(SyncRun.id) == self.run_id).values(total_rows=len(plan.rows))
                )
                await db.commit()
        return plan

    @staticmethod
    def _reopen(upload: Upload, path: Path) -> Callable[[], CsvReader | RecordFileReader]:
        """Opens the source again for a pass of its own (its problems are the main pass's to record)."""

        def read() -> CsvReader | RecordFileReader:
            if is_record_file(upload.stored_as):
                return RecordFileReader(path)
            return CsvReader(path, encoding=upload.encoding, delimiter=upload.delimiter)

        return read

    async def _order_layout(
        self, pipeline: Pipeline | RoutedPipeline, upload: Upload, path: Path
    ) -> OrderLayout:
        """A first pass over an order file: which orders have rows apart from each other."""
        layout = OrderLayout(pipeline)
        with self._reopen(upload, path)() as reader:
            for count, (_, row) in enumerate(reader):
                layout.add(row)
                if count % 1000 == 0:
                    await asyncio.sleep(0)
        return layout

    def _record_lost(self, orders: RetryOrders) -> None:
        """Failed orders the file no longer has at all fail again, saying so."""
        for key, rows in orders.lost().items():
            issue = Issue(
                ORDER_INCOMPLETE,
                f"order {key} cannot be rebuilt: the file no longer has its rows; nothing of it was sent",
                "properties.OrderId",
            )
            for row in rows:
                error = self._row_error(issue, row, "mapping")
                error.group_key, error.events = key, 1 if row == rows[0] else 0
                self.state.errors.append(error)

    def _remember_group(self, result: RowResult) -> None:
        """Keep an order's rows while its items are out (errors Klaviyo reports land on all of them)."""
        if len(result.rows) > 1 and result.key is not None:
            self.groups[result.row_ref] = (result.rows, result.key)
            if len(self.groups) > GROUP_CACHE:
                self.groups.popitem(last=False)

    def _record_issues(self, result: RowResult) -> None:
        """A result's errors on every row they fail (an order fails whole), and its row warnings."""
        state = self.state
        unrouted = any(w.rule == UNROUTED for w in result.warnings)
        if result.skipped and not unrouted:  # an unrouted record is stored below, with its event's name
            # A filtered or no-consent row is a skip: stored for the run page and the error CSV,
            # never a failure, never a retry candidate (retries take severity "error" only).
            reason = result.skip or Issue(SKIPPED_EMPTY, "skipped: a field marked skip row if empty is empty")
            for row in result.rows or (result.row_ref,):
                error = self._row_error(reason, row, "mapping")
                error.severity, error.events, error.group_key = SKIPPED, 0, result.key
                state.errors.append(error)
                state.skipped += 1
        for failure in row_failures(result):
            error = self._row_error(failure.issue, failure.row, "mapping")
            error.events, error.group_key = failure.events, result.key
            state.errors.append(error)
        for issue in result.warnings:
            if issue.rule in ROW_WARNINGS:
                error = self._row_error(issue, issue.row or result.row_ref, "mapping")
                if issue.rule == UNROUTED:
                    error.stage, error.severity = "routing", UNROUTED_SEVERITY
                    state.skipped += 1
                state.errors.append(error)
        self._note_warnings(result.warnings, result.row_ref)

    def _rows(
        self, reader: CsvReader | RecordFileReader, only: set[int] | None
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """Source rows (only the chosen ones for a retry), remembered briefly for error reports."""
        cache = self.row_cache
        for number, row in reader:
            if only is None or number in only:
                cache[number] = row
                if len(cache) > ROW_CACHE:
                    cache.popitem(last=False)
                yield number, row

    async def _checkpoint(
        self,
        run: SyncRun,
        reader: CsvReader | RecordFileReader,
        batch: Batch | None,
        last_ordinal: int,
        tasks: set[asyncio.Task[None]],
        client: KlaviyoClient | None,
        endpoint: ep.Endpoint,
    ) -> None:
        """Commit the batch (in flight), the errors found so far and the resume point; then send it."""
        state = self.state
        for problem in reader.problems:
            if problem.row is not None and problem.row > state.cursor_row:
                state.errors.append(self._row_error(problem.to_issue(), problem.row, "source"))
        # The reader keeps one entry per bad row; they are recorded now, so memory stays flat.
        reader.problems.clear()
        if batch is not None and run.dry_run:
            state.errors.extend(self._rejection_errors(batch.rejected, None))
        for error in state.errors:
            error.values = self.row_cache.get(error.row_number, error.values)
        failed = len({e.row_number for e in state.errors if e.severity == "error"})
        values: dict[str, Any] = {
            "cursor_row": max(state.row, state.cursor_row),
            "rows_read": state.rows_seen,
            "rows_failed": SyncRun.rows_failed + failed,
            "rows_skipped": SyncRun.rows_skipped + state.skipped,
            "updated_at": utcnow(),
        }
        record = None
        async with self.sessionmaker() as db:
            if batch is not None:
                values.update(next_ordinal=last_ordinal + 1, next_seq=batch.seq + 1)
                state.batches += 1
                if not run.dry_run:
                    record = SyncBatch(
                        run_id=self.run_id,
                        seq=batch.seq,
                        first_ordinal=state.batch_first,
                        last_ordinal=last_ordinal,
                        first_row=min(batch.row_refs),
                        last_row=max(batch.row_refs),
                        item_count=len(batch.items),
                        body_bytes=batch.size,
                    )
                    db.add(record)
            db.add_all(state.errors)
            await db.exec(update(SyncRun).where(col(SyncRun.id) == self.run_id).values(**values))
            await db.commit()
        state.cursor_row = max(state.row, state.cursor_row)
        state.errors = []
        state.skipped = 0
        state.last_checkpoint = time.monotonic()
        if record is not None and batch is not None:
            self._spawn(tasks, client, endpoint, batch, record.id or 0)

    # -- sending -------------------------------------------------------------------------------

    def _spawn(
        self,
        tasks: set[asyncio.Task[None]],
        client: KlaviyoClient | None,
        endpoint: ep.Endpoint,
        batch: Batch,
        batch_id: int,
    ) -> None:
        if client is None:
            return
        task = asyncio.create_task(self._send_closing(client, endpoint, batch, batch_id))
        tasks.add(task)

    async def _send_closing(
        self, client: KlaviyoClient, endpoint: ep.Endpoint, batch: Batch, batch_id: int
    ) -> None:
        """Send and record one batch; one that ends in an error is closed with the requests it made."""
        stats = AttemptStats()
        started = time.monotonic()
        try:
            await self._send_and_record(client, endpoint, batch, batch_id, stats)
        except BaseException:
            await asyncio.shield(self._close_failed(batch_id, stats, started))
            raise

    async def _close_failed(self, batch_id: int, stats: AttemptStats, started: float) -> None:
        """Mark an unfinished batch failed and count its requests on the run (a resume sends it again)."""
        try:
            async with self.sessionmaker() as db:
                closed = await db.exec(
                    update(SyncBatch)
                    .where(
                        col(SyncBatch.id) == batch_id,
                        # One closed before and sent again on resume counts this attempt's requests too.
                        col(SyncBatch.status).in_((BatchStatus.IN_FLIGHT, BatchStatus.FAILED)),
                    )
                    .values(
                        status=BatchStatus.FAILED,
                        attempts=SyncBatch.attempts + stats.attempts,
                        http_status=stats.last_status,
                        http_429=SyncBatch.http_429 + stats.rate_limited,
                        duration_ms=int((time.monotonic() - started) * 1000),
                        # Only a batch that reached Klaviyo has a send time (the Overview counts those).
                        sent_at=utcnow() if stats.attempts else None,
                    )
                )
                if closed.rowcount == 1:
                    await db.exec(
                        update(SyncRun)
                        .where(col(SyncRun.id) == self.run_id)
                        .values(
                            requests=SyncRun.requests + stats.attempts,
                            http_429=SyncRun.http_429 + stats.rate_limited,
                            updated_at=utcnow(),
                        )
                    )
                await db.commit()
        except Exception as exc:  # the database itself may be why the run failed; a resume resends it
            log.warning("batch not closed", run_id=self.run_id, batch_id=batch_id, error=str(exc))

    async def _close_tasks(self) -> None:
        """A run that ends on an error leaves batches in flight: stop them; each closes itself."""
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()

    async def _resend(
        self,
        tasks: set[asyncio.Task[None]],
        client: KlaviyoClient | None,
        endpoint: ep.Endpoint,
        inflight: list[SyncBatch],
        resend: dict[int, list[tuple[int, Any]]],
    ) -> None:
        for record in inflight:
            items = resend.get(record.id or 0) or []
            for batch in batches(items, endpoint, **self.envelope):
                batch.seq = record.seq
                self._spawn(tasks, client, endpoint, batch, record.id or 0)

    async def _drain(self, tasks: set[asyncio.Task[None]], until: int) -> None:
        while len(tasks) > until:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                tasks.discard(task)
                error = task.exception()
                if error is not None and self.fatal is None:
                    self.fatal = error
        if self.fatal is not None and until == 0:
            raise self.fatal

    async def _send_and_record(
        self, client: KlaviyoClient, endpoint: ep.Endpoint, batch: Batch, batch_id: int, stats: AttemptStats
    ) -> None:
        started = time.monotonic()
        if self.target.prepare is not None:
            batch = await self.target.prepare(client, batch)
        prefix, suffix = endpoint.envelope_parts(**self.envelope)
        async with self.send_gate:
            outcome: BatchOutcome = await send_batch(
                client,
                endpoint,
                batch,
                prefix=prefix,
                suffix=suffix,
                path_params=self.path_params,
                stats=stats,
            )
        # Events accepted per metric and day, kept with the batch for the check of Klaviyo afterwards.
        tally = None
        if endpoint == ep.BULK_EVENTS:
            tally = tally_events(
                zip(batch.row_refs, batch.items, strict=True), outcome.accepted, self.timezone
            )
        # Sent: only row numbers are needed from here on. A bulk job takes seconds to settle, and
        # a profile batch's items are megabytes.
        batch.items = []
        if self.target.settles:
            # Bulk jobs that report refused items only when they finish: wait, then record those too.
            scale = self.settings.klaviyo_time_scale
            first_delay = 0.5 / scale
            if self.job_seconds is not None and self.paced_polls:
                # Job reads share a small budget (750/min for catalogs): first look when jobs of this
                # run have been taking to finish, so most jobs are read once.
                first_delay = min(max(first_delay, 0.8 * self.job_seconds), 15.0 / scale)
            waited = time.monotonic()
            outcome = await settle(client, endpoint, outcome, first_delay=first_delay, max_delay=15.0 / scale)
            if outcome.job_ids and self.paced_polls:
                took = time.monotonic() - waited
                self.job_seconds = took if self.job_seconds is None else 0.8 * self.job_seconds + 0.2 * took
        settled: list[catalog.Settled] = []
        if self.router is not None:
            outcome, adopted = await self._adopt_existing(client, batch.seq, outcome)
        errors = self._rejection_errors(outcome.rejected, batch_id)
        for error in errors:
            if error.row_number < 0 and self.router is not None:
                # A delete: it has no source row, so the error names the entry instead.
                gone = self.router.external_id(batch.seq, error.row_number)
                error.row_number, error.values = 0, {**error.values, "external_id": gone}
            error.values = {**self.row_cache.get(error.row_number, {}), **error.values}
        if self.router is not None:
            settled = self.router.settled(batch.seq, outcome.accepted, adopted)
        async with self.sessionmaker() as db:
            await db.exec(
                update(SyncBatch)
                .where(col(SyncBatch.id) == batch_id)
                .values(
                    status=BatchStatus.SENT,
                    accepted=outcome.applied,
                    rejected=len(outcome.rejected),
                    # A batch closed by a failed run and sent again on resume keeps both counts.
                    attempts=SyncBatch.attempts + outcome.attempts,
                    http_status=outcome.http_status,
                    http_429=SyncBatch.http_429 + outcome.rate_limited,
                    job_id=outcome.job_id,
                    tally=tally,
                    duration_ms=int((time.monotonic() - started) * 1000),
                    sent_at=utcnow(),
                )
            )
            for error in errors:
                db.add(error)
            if self.router is not None:
                # Only entries Klaviyo accepted are remembered: a refused one is tried again next sync.
                router = self.router
                await catalog.record_settled(db, router.scope, router.entry_type, self.run_id, settled)
            await db.exec(
                update(SyncRun)
                .where(col(SyncRun.id) == self.run_id)
                .values(
                    items_sent=SyncRun.items_sent + outcome.applied,
                    requests=SyncRun.requests + outcome.attempts,
                    http_429=SyncRun.http_429 + outcome.rate_limited,
                    rows_failed=SyncRun.rows_failed
                    + len({e.row_number for e in errors if e.row_number and e.severity == "error"}),
                    updated_at=utcnow(),
                )
            )
            await db.commit()

    # -- outcomes ------------------------------------------------------------------------------

    def _row_error(self, issue: Issue, row: int, stage: str) -> RowError:
        return RowError(
            run_id=self.run_id,
            row_number=row,
            severity=issue.severity,
            stage=stage,
            column=issue.column,
            rule=issue.rule,
            message=issue.message,
        )

    def _rejection_errors(self, rejections: list[RowRejection], batch_id: int | None) -> list[RowError]:
        """Items Klaviyo refused as row errors: one per row and reason, counting the events refused.

        An order's refused events land on every row of the order (its first row counts them).
        """
        merged: dict[tuple[int, str, str | None, str], RowError] = {}
        for rejection in rejections:
            column = _column_of(rejection.pointer)
            mark = (rejection.row_ref, rejection.code, column, rejection.detail)
            known = merged.get(mark)
            if known is not None:
                known.events += rejection.count
                continue
            rows, key = self.groups.get(rejection.row_ref, ((rejection.row_ref,), None))
            for row in rows:
                error = RowError(
                    run_id=self.run_id,
                    row_number=row,
                    stage="klaviyo",
                    column=column,
                    rule=rejection.code,
                    message=rejection.detail,
                    values=({"pointer": rejection.pointer} if rejection.pointer else {})
                    | ({"count": rejection.count} if rejection.count != 1 else {}),
                    batch_id=batch_id,
                    events=rejection.count if row == rejection.row_ref else 0,
                    group_key=key,
                )
                if row == rejection.row_ref:
                    merged[mark] = error
                else:
                    merged[(row, *mark[1:])] = error
        return list(merged.values())

    def _note_warnings(self, warnings: list[Issue], row: int) -> None:
        for issue in warnings:
            if issue.rule in ROW_WARNINGS:
                continue  # recorded on its row instead
            count = self.warning_counts.get(issue.rule, 0) + 1
            self.warning_counts[issue.rule] = count
            entry = self.summary_warnings.setdefault(
                issue.rule,
                {"rule": issue.rule, "message": issue.message, "column": issue.column, "examples": []},
            )
            example = issue.row or row
            if len(entry["examples"]) < 5 and example not in entry["examples"]:
                entry["examples"].append(example)

    def _note_not_stored(self, warnings: list[Issue], row: int, items: int) -> None:
        if items and any(w.rule in NOT_STORED for w in warnings):
            self.not_stored[row] = items

    async def _not_stored_count(self, db: AsyncSession, upto: int) -> int:
        """Items of this attempt's rows up to the checkpoint that Klaviyo will not keep, leaving out rows
        that failed (rows past the checkpoint are read again, and counted, by the next attempt)."""
        rows = [row for row in self.not_stored if row <= upto]
        failed: set[int] = set()
        for start in range(0, len(rows), 1000):
            query = select(RowError.row_number).where(
                RowError.run_id == self.run_id,
                RowError.severity == "error",
                col(RowError.row_number).in_(rows[start : start + 1000]),
            )
            failed.update((await db.exec(query)).all())
        return sum(self.not_stored[row] for row in rows if row not in failed)

    def _catalog_summary(self) -> dict[str, Any]:
        assert self.router is not None
        plan = self.router.plan
        return {
            "unchanged": plan.unchanged,
            "planned": plan.planned,
            "delete_skipped": self.catalog_delete_skipped,
        }

    async def _finish(self, status: RunStatus, message: str | None) -> None:
        async with self.sessionmaker() as db:
            run = await db.get(SyncRun, self.run_id)
            if run is None:
                return
            if status == RunStatus.COMPLETED and run.status == RunStatus.CANCELLING:
                status = RunStatus.CANCELLED
            run.status = status
            run.error_message = message
            run.lease_owner, run.lease_until = None, None
            if status.finished:
                run.finished_at = utcnow()
            unrouted = await run_routes.unrouted_counts(db, self.run_id)
            run.rows_skipped = await count_skipped_rows(db, self.run_id)
            if status == RunStatus.COMPLETED:
                if run.only_rows is None:
                    # Rows the reader refused are not yielded: the last row number counts them.
                    run.rows_read = max(run.rows_read, run.cursor_row)
                # Two batches can each refuse events of one order: count each failed row once.
                run.rows_failed = await count_failed_rows(db, self.run_id)
                run.rows_ok = max(run.rows_read - run.rows_failed - run.rows_skipped, 0)
            warnings = [{**w, "count": self.warning_counts[r]} for r, w in self.summary_warnings.items()]
            if self.router is not None:
                run.summary = {**run.summary, "catalog": self._catalog_summary()}
            # Each attempt (a resume included) adds the rows it read, from where it started to the checkpoint.
            not_stored = await self._not_stored_count(db, run.cursor_row)
            not_stored += int(run.summary.get("not_stored", 0))
            run.summary = {
                **run.summary,
                "not_stored": not_stored,
                **({"unrouted": unrouted} if unrouted else {}),
                **(await _job_doubts(db, self.run_id)),
                "warnings": sorted(warnings, key=lambda w: -w["count"]),
                "items": self.state.items if run.dry_run else run.items_sent,
                "skips": await skipped_by_rule(db, self.run_id),
                "requests_needed": self.state.batches,
            }
            run.updated_at = utcnow()
            db.add(run)
            await db.commit()
        log.info("run ended", run_id=self.run_id, status=status.value, pid=os.getpid())


async def _job_doubts(db: AsyncSession, run_id: int) -> dict[str, int]:
    """Items Klaviyo refused without naming a row, and rows of jobs whose totals did not add up."""
    unknown = await db.exec(
        select(RowError.values).where(col(RowError.run_id) == run_id, col(RowError.rule) == ROW_UNKNOWN)
    )
    unconfirmed = await db.exec(
        select(func.count()).where(col(RowError.run_id) == run_id, col(RowError.rule) == UNCONFIRMED)
    )
    return {
        "refused_row_unknown": sum(int((v or {}).get("count", 1)) for v in unknown.all()),
        "unconfirmed_rows": int(unconfirmed.one()),
    }


async def send_run(ctx: dict[str, Any], run_id: int) -> dict[str, Any]:
    """Send (or dry-run) one run from its last checkpoint to the end, or until paused or cancelled."""
    return await RunExecutor(ctx, run_id).execute()
