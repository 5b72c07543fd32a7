"""arq WorkerSettings: the functions a worker runs and the clients it shares between jobs."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import structlog
from arq import cron
from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.worker import func

from config.logging import configure_logging
from config.settings import get_settings
from models.db import make_engine, make_sessionmaker
from sync import outbound
from workers.analyse_upload import analyse_upload
from workers.check_connection import check_connection
from workers.consent import deliver_consent, poll_consent
from workers.forward_ingest import forward_ingest, sweep_ingest
from workers.heartbeat import JobCount, beat_forever
from workers.inspector import RequestInspector
from workers.reconcile_runs import reconcile_runs
from workers.refresh_metrics import refresh_metrics
from workers.run_hooks import send_run
from workers.schedules import run_schedule, schedule_ticks
from workers.sync_lists import list_operation
from workers.verify_run import verify_run

log = structlog.get_logger(__name__)


async def startup(ctx: dict[str, Any]) -> None:
    # Tests hand the worker their own settings through ctx; a deployed worker reads the environment.
    settings = ctx.setdefault("settings", get_settings())
    configure_logging(settings.log_level, settings.log_json)
    ctx["engine"] = make_engine(settings.database_url)
    ctx["sessionmaker"] = make_sessionmaker(ctx["engine"])
    # Sync status: hooks sample each run's requests to Klaviyo for the run page (workers/inspector.py).
    ctx["inspector"] = RequestInspector(ctx["redis"], ctx["sessionmaker"], settings.queue_name)
    ctx["http"] = httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, connect=5.0),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        event_hooks=ctx["inspector"].hooks(),
    )
    ctx["job_count"] = JobCount()
    # Feeds and the webhook: URLs an operator typed, reached only through the outbound guard.
    ctx["outbound_http"] = outbound.client(
        settings.outbound_allow_list, timeout=httpx.Timeout(30.0, connect=5.0)
    )
    ctx["heartbeat"] = asyncio.create_task(beat_forever(ctx["redis"], ctx, settings.queue_name))
    log.info("worker started", database=settings.database_url.split("@")[-1])


async def shutdown(ctx: dict[str, Any]) -> None:
    task = ctx.get("heartbeat")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for name in ("http", "outbound_http"):
        if name in ctx:
            await ctx[name].aclose()
    if "inspector" in ctx:
        await ctx["inspector"].drain()
    if "engine" in ctx:
        await ctx["engine"].dispose()


# The checks that run every few seconds: not work done, so the Overview's "jobs done" leaves them out.
PERIODIC = frozenset(
    job.__name__ for job in (reconcile_runs, schedule_ticks, sweep_ingest, poll_consent, deliver_consent)
)


async def job_ended(ctx: dict[str, Any]) -> None:
    """Count a finished job for the heartbeat (a periodic job's id starts with its function's name)."""
    count = ctx.get("job_count")
    if count is not None and str(ctx.get("job_id", "")).split(":", 1)[0] not in PERIODIC:
        count.add()


def cron_jobs_for(queue_name: str) -> list[CronJob]:
    """The periodic jobs of one deployment (one queue).

    arq's unique cron job ids are global to the Redis server, so each name carries the queue: two
    deployments (or a test stack) sharing one Redis must each run their own jobs every tick.
    """

    def every(seconds: int, job: Any) -> CronJob:
        return cron(
            job,
            name=f"{job.__name__}:{queue_name}",
            second=set(range(0, 60, seconds)),
            run_at_startup=True,
            unique=True,
        )

    return [
        # A dead worker's run is picked up soon after its lease expires.
        every(5, reconcile_runs),
        # Due schedules are claimed in the database (one worker wins each tick); at startup a tick
        # missed while no worker ran is due, and runs once.
        every(10, schedule_ticks),
        # Ingest records whose retry pause is over (or whose wake-up was lost) move on.
        every(5, sweep_ingest),
        # Klaviyo's consent events into the ledger, and the ledger out to stores' webhooks.
        every(60, poll_consent),
        every(5, deliver_consent),
    ]


class WorkerSettings:
    functions = [
        check_connection,
        func(send_run, timeout=7 * 24 * 3600, max_tries=1000),
        analyse_upload,
        refresh_metrics,
        func(list_operation, timeout=3600, max_tries=3),
        func(forward_ingest, timeout=600, max_tries=5),
        func(run_schedule, timeout=1800, max_tries=3),
        func(poll_consent, timeout=900, max_tries=1),
        func(deliver_consent, timeout=300, max_tries=1),
        func(verify_run, timeout=1800, max_tries=3),
    ]
    cron_jobs = cron_jobs_for(get_settings().queue_name)
    on_startup = startup
    on_shutdown = shutdown
    on_job_end = job_ended
    redis_settings = RedisSettings.from_dsn(get_settings().redis_url)
    queue_name = get_settings().queue_name
    keep_result = 0  # the database, not arq's results, feeds the UI
    max_jobs = 20
    job_timeout = 3600
    health_check_interval = 10
