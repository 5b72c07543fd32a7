"""Jobs: forward a source's ingest inbox to Klaviyo, and the sweep that keeps every inbox moving.

One forwarder per source at a time (a Redis lock), so records that arrive while it waits on the
shared limiter or on Klaviyo pile up and go out together in the next request: one create-event call
when a single event is waiting, a bulk job when several are. The ingest API sets a wake flag before
it enqueues the job (whose id is fixed per source, so arq drops repeats); the lock holder looks at
the flag before it stops and again after it lets the lock go, so no record is left behind by a
wake-up that arrived while a forwarder was finishing.

Each pass claims due rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite has one writer), maps
them with the source's mapping, sends, and records every row's outcome: mapping errors and items
Klaviyo refuses are final; 5xx, timeouts and network failures are tried again later with growing
pauses until ``INGEST_MAX_ATTEMPTS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import and_, delete, or_, update
from sqlmodel import col, select

from klaviyo import endpoints as ep
from klaviyo.batching import batches
from klaviyo.client import KlaviyoClient
from klaviyo.errors import AccessDenied, KlaviyoError, ValidationFailed
from klaviyo.limiter import RateLimiter
from klaviyo.retry import RetryPolicy
from klaviyo.sender import send_batch
from models import InboxStatus, IngestRecord, IngestSource
from models.base import utcnow
from services import ingest
from services.accounts import get_account, klaviyo_target
from services.ingest_inbox import router_of
from sync.targets.common import Item
from workers.run_hooks import notify_ingest_failures

log = structlog.get_logger(__name__)

CLAIM = 1000  # rows per pass: one bulk request's worth of events
LOCK_SECONDS = 30
# The lock holder renews its rows' lease with the lock; the sweep frees rows whose lease ran out
# (a worker that died, and no forwarder has run for the source since).
CLAIM_LEASE = timedelta(seconds=2 * LOCK_SECONDS)
JOB_BUDGET_SECONDS = 240  # then the job ends; the sweep starts the next one within seconds
PRUNE_EVERY_SECONDS = 3600

RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end
return 0
"""


def single_event(item: Item) -> dict[str, Any]:
    """The create-event resource for one event-bulk-create item (same event, same profile)."""
    attributes = item["attributes"]
    event = dict(attributes["events"]["data"][0]["attributes"])
    event["profile"] = attributes["profile"]
    return {"type": "event", "attributes": event}


@dataclass(slots=True)
class Claimed:
    """A row this pass owns (plain values: building table models per row costs more than mapping)."""

    id: int
    body: dict[str, Any]
    attempts: int
    route: str | None = None


@dataclass
class Outcomes:
    """What happened to each claimed row in one pass."""

    sent: set[int] = field(default_factory=set)
    final: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (kind, message)
    transient: dict[int, str] = field(default_factory=dict)
    unrouted: set[int] = field(default_factory=set)  # its route was removed since it arrived

    def fail(self, row_id: int, kind: str, message: str) -> None:
        self.final.setdefault(row_id, (kind, message[:2000]))
        self.sent.discard(row_id)
        self.transient.pop(row_id, None)

    def retry(self, row_id: int, message: str) -> None:
        if row_id not in self.final:
            self.transient[row_id] = message[:2000]
            self.sent.discard(row_id)


class Forwarder:
    """Maps and sends one source's due rows, pass by pass."""

    def __init__(self, ctx: dict[str, Any], source_id: int) -> None:
        self.ctx = ctx
        self.settings = ctx["settings"]
        self.sessionmaker = ctx["sessionmaker"]
        self.source_id = source_id
        self.client: KlaviyoClient | None = None
        self.sent = 0
        self.failed = 0
        self.requests = 0

    async def _client(self) -> KlaviyoClient:
        # The same account, key and shared limiter as workers/send_run.py; a few quick retries per
        # request, since a row that still fails is simply tried again in a later pass.
        async with self.sessionmaker() as db:
            target = klaviyo_target(await get_account(db), self.settings)
            await db.commit()
        scale = self.settings.klaviyo_time_scale
        limiter = RateLimiter(self.ctx["redis"], time_scale=scale)
        policy = RetryPolicy(max_attempts=4, max_time=30.0 / scale, base=0.25 / scale, cap=2.0 / scale)
        client = KlaviyoClient(
            target.api_key, base_url=target.base_url, limiter=limiter, http=self.ctx["http"], retry=policy
        )
        return client.for_run(f"ingest:{self.source_id}")

    async def _claim(self) -> list[Claimed]:
        now = utcnow()
        async with self.sessionmaker() as db:
            due = (
                select(IngestRecord.id)
                .where(
                    IngestRecord.source_id == self.source_id,
                    IngestRecord.status == InboxStatus.PENDING,
                    or_(
                        col(IngestRecord.next_attempt_at).is_(None), col(IngestRecord.next_attempt_at) <= now
                    ),
                )
                .order_by(col(IngestRecord.id))
                .limit(CLAIM)
                .with_for_update(skip_locked=True)
            )
            claim = (
                update(IngestRecord)
                .where(col(IngestRecord.id).in_(due.scalar_subquery()))
                .values(
                    status=InboxStatus.SENDING,
                    lease_until=now + CLAIM_LEASE,
                    attempts=IngestRecord.attempts + 1,
                )
                .returning(
                    col(IngestRecord.id),
                    col(IngestRecord.body),
                    col(IngestRecord.attempts),
                    col(IngestRecord.route),
                )
            )
            rows = (await db.exec(claim)).all()
            await db.commit()
        claimed = [Claimed(int(r[0]), r[1], int(r[2]), r[3]) for r in rows]
        return sorted(claimed, key=lambda record: record.id)

    async def take_over(self) -> None:
        """Just after taking the source's lock: rows still claimed were claimed by a forwarder that
        lost the lock (its worker died), so they are due again now, not when their lease runs out."""
        async with self.sessionmaker() as db:
            result = await db.exec(
                update(IngestRecord)
                .where(
                    col(IngestRecord.source_id) == self.source_id,
                    col(IngestRecord.status) == InboxStatus.SENDING,
                )
                .values(status=InboxStatus.PENDING, lease_until=None)
            )
            await db.commit()
        if result.rowcount:
            log.warning(
                "ingest rows of a lost forwarder taken over", source_id=self.source_id, rows=result.rowcount
            )

    async def renew_leases(self) -> None:
        """Keep this forwarder's claimed rows from being freed by the sweep while it sends them."""
        async with self.sessionmaker() as db:
            await db.exec(
                update(IngestRecord)
                .where(
                    col(IngestRecord.source_id) == self.source_id,
                    col(IngestRecord.status) == InboxStatus.SENDING,
                )
                .values(lease_until=utcnow() + CLAIM_LEASE)
            )
            await db.commit()

    async def pass_once(self) -> int:
        """Claim, map, send and record one batch of due rows; returns how many rows it handled."""
        rows = await self._claim()
        if not rows:
            return 0
        outcomes = Outcomes()
        async with self.sessionmaker() as db:
            loaded = await ingest.load_source(db, self.source_id)
            routes = await ingest.route_versions(db, self.source_id)
        version = loaded[1] if loaded is not None else None
        router = router_of(version, routes)
        items: list[tuple[int, Item]] = []
        for row in rows:
            row_id = row.id
            pipeline = router.for_key(row.route)
            if pipeline is None:
                if row.route:
                    outcomes.unrouted.add(row_id)  # kept until a route for its event is added
                else:
                    outcomes.retry(row_id, "the source's mapping was deleted; choose another mapping")
                continue
            errors = []
            produced: list[Item] = []
            for result in pipeline.run([(row_id, row.body)]):
                errors.extend(result.errors)
                produced.extend(result.items)
            if errors:
                outcomes.fail(
                    row_id, "mapping", "; ".join(f"{e.column or e.rule}: {e.message}" for e in errors)
                )
            elif produced:
                outcomes.sent.add(row_id)
                items.extend((row_id, item) for item in produced)
            else:
                outcomes.sent.add(row_id)  # skipped by the mapping on purpose: nothing to send
        if items:
            if self.client is None:
                self.client = await self._client()
            await self._send(self.client, items, outcomes)
        await self._record(rows, outcomes)
        return len(rows)

    async def _send(self, client: KlaviyoClient, items: list[tuple[int, Item]], outcomes: Outcomes) -> None:
        if len(items) == 1:
            row_id, item = items[0]
            self.requests += 1
            try:
                await client.create_event(single_event(item))
            except ValidationFailed as exc:
                detail = "; ".join(e.detail or e.title for e in exc.errors) or str(exc)
                outcomes.fail(row_id, "klaviyo", detail)
            except KlaviyoError as exc:
                self._failed_call(exc, [row_id], outcomes)
            return
        endpoint = ep.BULK_EVENTS
        prefix, suffix = endpoint.envelope_parts()
        for batch in batches(items, endpoint):
            self.requests += 1
            for rejection in batch.rejected:
                outcomes.fail(rejection.row_ref, "klaviyo", rejection.detail)
            if not batch.items:
                continue
            try:
                outcome = await send_batch(client, endpoint, batch, prefix=prefix, suffix=suffix)
            except KlaviyoError as exc:
                self._failed_call(exc, batch.row_refs, outcomes)
                continue
            for rejection in outcome.rejected:
                outcomes.fail(rejection.row_ref, "klaviyo", rejection.detail)

    @staticmethod
    def _failed_call(exc: KlaviyoError, row_ids: list[int], outcomes: Outcomes) -> None:
        if isinstance(exc, AccessDenied):
            message = f"Klaviyo refused the key ({exc}); fix it on the Connection page"
        else:
            message = f"{exc}" + (f" (HTTP {exc.status})" if exc.status else "")
        for row_id in row_ids:
            if exc.retryable or isinstance(exc, AccessDenied):
                outcomes.retry(row_id, message)
            else:
                outcomes.fail(row_id, "klaviyo", message)

    async def _record(self, rows: list[Claimed], outcomes: Outcomes) -> None:
        now = utcnow()
        limit = self.settings.ingest_max_attempts
        attempts = {row.id: row.attempts for row in rows}
        for row_id, message in list(outcomes.transient.items()):
            if attempts.get(row_id, 0) >= limit:
                outcomes.fail(row_id, "transient", f"gave up after {limit} attempts: {message}")
        async with self.sessionmaker() as db:
            table = col(IngestRecord.id)
            if outcomes.sent:
                await db.exec(
                    update(IngestRecord)
                    .where(table.in_(sorted(outcomes.sent)))
                    .values(
                        status=InboxStatus.SENT,
                        sent_at=now,
                        lease_until=None,
                        error_kind=None,
                        last_error=None,
                    )
                )
            for row_id, (kind, message) in outcomes.final.items():
                await db.exec(
                    update(IngestRecord)
                    .where(table == row_id)
                    .values(status=InboxStatus.FAILED, lease_until=None, error_kind=kind, last_error=message)
                )
            if outcomes.unrouted:
                await db.exec(
                    update(IngestRecord)
                    .where(table.in_(sorted(outcomes.unrouted)))
                    .values(status=InboxStatus.UNROUTED, lease_until=None, attempts=0)
                )
            for row_id, message in outcomes.transient.items():
                delay = ingest.retry_delay(attempts.get(row_id, 1), self.settings.klaviyo_time_scale)
                await db.exec(
                    update(IngestRecord)
                    .where(table == row_id)
                    .values(
                        status=InboxStatus.PENDING,
                        lease_until=None,
                        next_attempt_at=now + delay,
                        error_kind="transient",
                        last_error=message,
                    )
                )
            await db.exec(
                update(IngestSource)
                .where(col(IngestSource.id) == self.source_id)
                .values(
                    sent_count=IngestSource.sent_count + len(outcomes.sent),
                    failed_count=IngestSource.failed_count + len(outcomes.final),
                )
            )
            await db.commit()
        self.sent += len(outcomes.sent)
        self.failed += len(outcomes.final)


async def _keep_lock(redis: Any, key: str, owner: str, forwarder: Forwarder) -> None:
    """While the forwarder holds the lock: extend it, and the lease of the rows it has claimed."""
    while True:
        await asyncio.sleep(LOCK_SECONDS / 3)
        if not await redis.eval(EXTEND, 1, key, owner, LOCK_SECONDS):
            return  # lost (we stalled past its expiry): another forwarder owns the rows now
        try:
            await forwarder.renew_leases()
        except Exception as exc:  # the database away: the lease is long enough to try again
            log.warning("ingest lease not renewed", source_id=forwarder.source_id, error=str(exc)[:200])


async def forward_ingest(ctx: dict[str, Any], source_id: int) -> dict[str, Any]:
    """Forward the source's due records until none are left (or the job's time budget is spent)."""
    settings, redis = ctx["settings"], ctx["redis"]
    wake, lock = (
        ingest.wake_key(settings.queue_name, source_id),
        ingest.lock_key(settings.queue_name, source_id),
    )
    forwarder = Forwarder(ctx, source_id)
    owner = uuid.uuid4().hex
    deadline = time.monotonic() + JOB_BUDGET_SECONDS
    while await redis.set(lock, owner, nx=True, ex=LOCK_SECONDS):
        keeper = asyncio.create_task(_keep_lock(redis, lock, owner, forwarder))
        try:
            await forwarder.take_over()
            while time.monotonic() < deadline and await redis.getdel(wake):
                while time.monotonic() < deadline and await forwarder.pass_once():
                    pass
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await redis.eval(RELEASE, 1, lock, owner)
        # A wake-up that came while we held the lock but after our last look at the flag.
        if time.monotonic() >= deadline or not await redis.exists(wake):
            break
    return {
        "source": source_id,
        "sent": forwarder.sent,
        "failed": forwarder.failed,
        "requests": forwarder.requests,
    }


async def sweep_ingest(ctx: dict[str, Any]) -> dict[str, Any]:
    """Cron: free rows claimed by a worker that died, wake every source with due rows (retries whose
    pause is over, or a wake-up lost while Redis was away), and drop sent rows past retention.

    Source by source, so every query is a range of the (source, status, id) index: the inbox holds
    every sent record of the retention period, the unsent ones are few."""
    settings, redis = ctx["settings"], ctx["redis"]
    now = utcnow()
    prune = bool(
        await redis.set(f"{settings.queue_name}:ingest:pruned", b"1", nx=True, ex=PRUNE_EVERY_SECONDS)
    )
    cutoff = now - timedelta(days=settings.ingest_retention_days)
    woken: list[int] = []
    pruned = 0
    async with ctx["sessionmaker"]() as db:
        sources = list((await db.exec(select(IngestSource))).all())
        source_ids = [source.id for source in sources]
        for source_id in source_ids:
            mine = col(IngestRecord.source_id) == source_id
            await db.exec(
                update(IngestRecord)
                .where(
                    mine, col(IngestRecord.status) == InboxStatus.SENDING, col(IngestRecord.lease_until) < now
                )
                .values(status=InboxStatus.PENDING, lease_until=None)
            )
            due = select(IngestRecord.id).where(
                mine,
                IngestRecord.status == InboxStatus.PENDING,
                or_(col(IngestRecord.next_attempt_at).is_(None), col(IngestRecord.next_attempt_at) <= now),
            )
            if (await db.exec(due.limit(1))).first() is not None:
                woken.append(source_id or 0)
            if prune:
                result = await db.exec(
                    delete(IngestRecord).where(
                        and_(
                            mine,
                            col(IngestRecord.status) == InboxStatus.SENT,
                            col(IngestRecord.sent_at) < cutoff,
                        )
                    )
                )
                pruned += int(result.rowcount or 0)
                # Records of an event nobody routed within the retention period are let go too.
                result = await db.exec(
                    delete(IngestRecord).where(
                        and_(
                            mine,
                            col(IngestRecord.status) == InboxStatus.UNROUTED,
                            col(IngestRecord.received_at) < cutoff,
                        )
                    )
                )
                pruned += int(result.rowcount or 0)
            await db.commit()
    for source_id in woken:
        await ingest.wake(redis, settings.queue_name, source_id, force=True)
    reported = await notify_ingest_failures(ctx, sources)
    return {"woken": woken, "pruned": pruned, "reported": reported}
