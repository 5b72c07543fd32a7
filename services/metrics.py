"""Prometheus metrics, computed at scrape time from the database and Redis (no in-process state,
so every web process answers the same and nothing is lost on restart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from redis.asyncio import Redis
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from config.settings import Settings
from models import RunStatus, SyncBatch, SyncRun
from services import ingest, status
from services.workers import worker_health


async def render_metrics(db: AsyncSession, redis: Redis, settings: Settings) -> bytes:
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, labels, registry=registry)

    runs = gauge("kc_runs", "Sync runs by status.", ("status",))
    counts = dict((await db.exec(select(SyncRun.status, func.count()).group_by(SyncRun.status))).all())
    for state in RunStatus:
        runs.labels(state.value).set(counts.get(state, 0))

    requests = gauge("kc_batches_by_http_status", "Batches by their final HTTP status.", ("status",))
    attempts = gauge("kc_requests_total", "Requests to Klaviyo (every attempt of every batch).")
    r429 = gauge("kc_http_429_total", "Requests Klaviyo answered with 429.")
    # Everything about sending comes from the batch ledger (100k rows is cheap; a sum over a million
    # runs is not): one pass grouped by the batch's final HTTP status.
    by_status = select(  # type: ignore[call-overload]
        SyncBatch.http_status,
        func.count(),
        func.coalesce(func.sum(SyncBatch.attempts), 0),
        func.coalesce(func.sum(SyncBatch.http_429), 0),
        func.coalesce(func.sum(SyncBatch.accepted), 0),
        func.coalesce(func.sum(SyncBatch.rejected), 0),
    ).group_by(col(SyncBatch.http_status))
    totals = [0, 0, 0, 0]
    for code, n, *sums in (await db.exec(by_status)).all():
        requests.labels(str(code) if code is not None else "none").set(n)
        totals = [a + int(b) for a, b in zip(totals, sums, strict=True)]
    attempts.set(totals[0])
    r429.set(totals[1])
    gauge("kc_items_sent_total", "Items (events, profiles, ...) Klaviyo accepted.").set(totals[2])
    gauge("kc_items_rejected_total", "Items Klaviyo rejected.").set(totals[3])

    limits = await status.headroom(db, redis, settings)
    used = gauge("kc_limiter_used", "Grants in the current steady window.", ("rate_class",))
    limit = gauge("kc_limiter_limit", "Grants the limiter allows per steady window.", ("rate_class",))
    waiting = gauge("kc_limiter_waiting", "Callers waiting for a grant now.", ("rate_class",))
    paused = gauge("kc_limiter_paused_seconds", "Seconds left on a 429 pause.", ("rate_class",))
    for headroom in limits or []:
        used.labels(headroom.name).set(headroom.used)
        limit.labels(headroom.name).set(headroom.limit)
        waiting.labels(headroom.name).set(headroom.waiting)
        paused.labels(headroom.name).set(headroom.paused_s)

    records = gauge(
        "kc_ingest_records", "Ingested records not yet sent, by source and state.", ("source", "state")
    )
    sent = gauge("kc_ingest_sent_total", "Ingested records Klaviyo accepted, by source.", ("source",))
    repeats = gauge(
        "kc_ingest_duplicates_total", "Repeated records dropped on receipt, by source.", ("source",)
    )
    for row in await ingest.list_sources(db):
        name = row.source.name
        records.labels(name, "waiting").set(row.stats.pending)
        records.labels(name, "retrying").set(row.stats.retrying)
        records.labels(name, "failed").set(row.stats.failed)
        records.labels(name, "unrouted").set(row.stats.unrouted)
        sent.labels(name).set(row.source.sent_count)
        repeats.labels(name).set(row.source.duplicate_count)

    health = await worker_health(redis, settings.queue_name)
    gauge("kc_redis_up", "1 when Redis answered.").set(1 if health.redis_ok else 0)
    gauge("kc_workers_alive", "Workers with a live heartbeat.").set(health.alive)
    gauge("kc_queue_depth", "Jobs waiting in the queue.").set(health.queue_depth)
    age = gauge("kc_worker_heartbeat_age_seconds", "Seconds since each worker's last heartbeat.", ("worker",))
    for worker in health.workers:
        age.labels(worker.get("name", "?")).set(worker.get("age_s", 0))
    return generate_latest(registry)
