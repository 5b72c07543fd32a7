"""What the console adds around the send_run job, without touching the run loop itself.

``send_run`` here is the job workers register under that name. It sets the inspector's
``current_run_id`` (every task the run spawns inherits it, so the HTTP hooks can sample that run's
requests), runs the real job, and at the end posts the admin's webhook when the run failed or
ended with errors above the threshold: one short POST, failures logged, never retried, never
raised into the job. The same webhook hears about failed schedule ticks (from the tick job) and
failed ingest records (from the ingest sweep), each rate-limited by a Redis key.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
import structlog
from redis.exceptions import RedisError

from models import IngestSource, NotificationSettings, RunStatus, Schedule, SyncRun
from services import notifications, verification
from sync import outbound
from workers.inspector import current_run_id
from workers.send_run import send_run as run_job

log = structlog.get_logger(__name__)
WEBHOOK_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
T = TypeVar("T")
INGEST_NOTIFY_SECONDS = 15 * 60  # one call per ingest source at most this often
SCHEDULE_NOTIFY_SECONDS = 3600  # while a schedule keeps failing, one call an hour


async def send_run(ctx: dict[str, Any], run_id: int) -> dict[str, Any]:
    """The send_run job with request sampling and the run-end webhook."""
    token = current_run_id.set(run_id)
    try:
        result = await run_job(ctx, run_id)
    finally:
        current_run_id.reset(token)
    if "skipped" not in result:
        await notify_run_end(ctx, run_id)
        if result.get("status") == RunStatus.COMPLETED.value:
            await schedule_check(ctx, run_id)
    return result


async def schedule_check(ctx: dict[str, Any], run_id: int) -> None:
    """Queue the automatic check of what Klaviyo holds, some minutes after a run completes."""
    settings = ctx["settings"]
    if not settings.verify_auto:
        return
    try:
        async with ctx["sessionmaker"]() as db:
            run = await db.get(SyncRun, run_id)
            if run is None or verification.can_verify(run) is not None:
                return
            delay = settings.verify_delay_seconds / settings.klaviyo_time_scale
            await verification.request_check(db, ctx["redis"], settings.queue_name, run, auto=1, defer=delay)
    except Exception as exc:  # the run is done either way; the check can be asked for by hand
        log.warning("check not scheduled", run_id=run_id, error=f"{type(exc).__name__}: {exc}")


async def notify_run_end(ctx: dict[str, Any], run_id: int) -> bool:
    """Post the webhook for this run if it is due; True when a call was answered with 2xx."""
    try:
        found = await _webhook_and(ctx, SyncRun, run_id)
        if found is None:
            return False
        config, url, run = found
        why = notifications.reason(run, config)
        if why is None:
            return False
        # A job may run twice (arq's promise); the webhook hears about each ending once.
        redis = ctx.get("redis")
        if redis is not None:
            try:
                key = f"console:notified:{ctx['settings'].queue_name}:{run_id}:{run.status.value}"
                fresh = await redis.set(key, 1, nx=True, ex=86400)
            except RedisError:
                fresh = True
            if not fresh:
                return False
        return await _post(ctx, url, notifications.payload(run, why), run_id=run_id, reason=why)
    except Exception as exc:  # a webhook must never fail a run
        log.warning("webhook not delivered", run_id=run_id, error=f"{type(exc).__name__}: {exc}")
        return False


async def _webhook_and(
    ctx: dict[str, Any], model: type[T], row_id: int
) -> tuple[NotificationSettings, str, T] | None:
    """The notification settings, their webhook URL and the row a call would be about, when
    notifications are on (with a URL) and the row exists."""
    async with ctx["sessionmaker"]() as db:
        config = await notifications.get_settings(db)
        row = await db.get(model, row_id)
        await db.commit()
    if row is None or not config.enabled or not config.webhook_url:
        return None
    return config, config.webhook_url, row


async def _post(ctx: dict[str, Any], url: str, body: dict[str, Any], **about: Any) -> bool:
    # Through the outbound guard; redirects are not followed (a webhook answers where it is).
    http = ctx.get("outbound_http")
    if http is None:  # a caller without the worker's startup (a one-off context)
        async with outbound.client(ctx["settings"].outbound_allow_list) as own:
            answer = await own.post(url, json=body, timeout=WEBHOOK_TIMEOUT)
    else:
        answer = await http.post(url, json=body, timeout=WEBHOOK_TIMEOUT)
    if answer.status_code >= 300:
        log.warning("webhook answered with an error", status=answer.status_code, **about)
        return False
    log.info("webhook posted", **about)
    return True


async def notify_ingest_failures(ctx: dict[str, Any], sources: list[IngestSource]) -> list[int]:
    """Post the webhook for each source with records failed since the last call about it (at most
    one call per source every ``INGEST_NOTIFY_SECONDS``; failures meanwhile go in the next one).
    Returns the ids of the sources reported. Called by the ingest sweep."""
    redis, queue = ctx["redis"], ctx["settings"].queue_name
    reported: list[int] = []
    try:
        async with ctx["sessionmaker"]() as db:
            config = await notifications.get_settings(db)
            await db.commit()
        for source in sources:
            seen_key = f"console:ingest-failed-seen:{queue}:{source.id}"
            seen = await redis.get(seen_key)
            if (
                seen is None
                or int(seen) > source.failed_count
                or not config.enabled
                or not config.webhook_url
            ):
                # The first look (or failed records retried, or nobody to tell): the count so far is
                # the baseline, so a webhook turned on later does not hear about old failures.
                await redis.set(seen_key, source.failed_count)
                continue
            new_failed = source.failed_count - int(seen)
            if new_failed <= 0:
                continue
            quiet = f"console:ingest-notified:{queue}:{source.id}"
            if not await redis.set(quiet, 1, nx=True, ex=INGEST_NOTIFY_SECONDS):
                continue
            await redis.set(seen_key, source.failed_count)
            body = notifications.ingest_payload(source, new_failed)
            try:
                if await _post(
                    ctx, config.webhook_url, body, source_id=source.id, reason="ingest.records_failed"
                ):
                    reported.append(source.id or 0)
            except httpx.HTTPError as exc:
                log.warning(
                    "webhook not delivered", source_id=source.id, error=f"{type(exc).__name__}: {exc}"
                )
    except Exception as exc:  # the sweep must go on
        log.warning("ingest failures not reported", error=f"{type(exc).__name__}: {exc}")
    return reported


async def notify_schedule_tick(ctx: dict[str, Any], schedule_id: int, outcome: str | None) -> bool:
    """After a tick: post the webhook when it failed (the feed could not be fetched or read) and this
    is the first failure since the schedule last worked, or the first in an hour. True when posted."""
    redis, queue = ctx["redis"], ctx["settings"].queue_name
    quiet = f"console:schedule-notified:{queue}:{schedule_id}"
    try:
        if outcome != "failed":
            if outcome in ("queued_run", "nothing_new"):
                await redis.delete(quiet)  # it works again: the next failure is news
            return False
        found = await _webhook_and(ctx, Schedule, schedule_id)
        if found is None:
            return False
        _, url, schedule = found
        if not await redis.set(quiet, 1, nx=True, ex=SCHEDULE_NOTIFY_SECONDS):
            return False
        body = notifications.schedule_payload(schedule)
        return await _post(ctx, url, body, schedule_id=schedule_id, reason="schedule.tick_failed")
    except Exception as exc:  # a webhook must never fail a tick
        log.warning("webhook not delivered", schedule_id=schedule_id, error=f"{type(exc).__name__}: {exc}")
        return False
