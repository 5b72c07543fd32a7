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
from services import status
from services.workers import worker_health


async def render_metrics(db: AsyncSession, redis: Redis, settings: Settings) -> bytes:
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, labels, registry=registry)

    runs = gauge("kc_runs", "Sync runs by status.", ("status",))
    counts = dict((await db.exec(select(SyncRun.status, func.count()).group_by(SyncRun.status))).all())
    for state in RunStatus:
        runs.labels(state.value).set(counts.get(state, 0))

    totals = (
        await db.exec(
            select(  # type: ignore[call-overload]
                func.coalesce(func.sum(SyncRun.rows_read), 0),
                func.coalesce(func.sum(SyncRun.rows_failed), 0),
                func.coalesce(func.sum(SyncRun.items_sent), 0),
            ).where(col(SyncRun.dry_run).is_(False))
        )
    ).one()
    gauge("kc_rows_read_total", "Source rows read by sending runs.").set(totals[0])
    gauge("kc_rows_failed_total", "Rows of sending runs that ended in an error.").set(totals[1])
    gauge("kc_items_sent_total", "Items (events) Klaviyo accepted.").set(totals[2])

    requests = gauge("kc_batches_by_http_status", "Batches by their final HTTP status.", ("status",))
    attempts = gauge("kc_requests_total", "Requests to Klaviyo (every attempt of every batch).")
    r429 = gauge("kc_http_429_total", "Requests Klaviyo answered with 429.")
    by_status = select(  # type: ignore[call-overload]
        SyncBatch.http_status,
        func.count(),
        func.coalesce(func.sum(SyncBatch.attempts), 0),
        func.coalesce(func.sum(SyncBatch.http_429), 0),
    ).group_by(col(SyncBatch.http_status))
    total_attempts = total_429 = 0
    for code, n, tries, limited in (await db.exec(by_status)).all():
        requests.labels(str(code) if code is not None else "none").set(n)
        total_attempts += int(tries)
        total_429 += int(limited)
    attempts.set(total_attempts)
    r429.set(total_429)

    limits = await status.headroom(db, redis, settings)
    used = gauge("kc_limiter_used", "Grants in the current steady window.", ("rate_class",))
    limit = gauge("kc_limiter_limit", "Grants the limiter allows per steady window.", ("rate_class",))
    waiting = gauge("kc_limiter_waiting", "Callers waiting for a grant now.", ("rate_class",))
    paused = gauge("kc_limiter_paused_seconds", "Seconds left on a 429 pause.", ("rate_class",))
    for row in limits or []:
        used.labels(row.name).set(row.used)
        limit.labels(row.name).set(row.limit)
        waiting.labels(row.name).set(row.waiting)
        paused.labels(row.name).set(row.paused_s)

    health = await worker_health(redis, settings.queue_name)
    gauge("kc_redis_up", "1 when Redis answered.").set(1 if health.redis_ok else 0)
    gauge("kc_workers_alive", "Workers with a live heartbeat.").set(health.alive)
    gauge("kc_queue_depth", "Jobs waiting in the queue.").set(health.queue_depth)
    age = gauge("kc_worker_heartbeat_age_seconds", "Seconds since each worker's last heartbeat.", ("worker",))
    for worker in health.workers:
        age.labels(worker.get("name", "?")).set(worker.get("age_s", 0))
    return generate_latest(registry)
