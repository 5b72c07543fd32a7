"""What the console adds around the send_run job, without touching the run loop itself.

``send_run`` here is the job workers register under that name. It sets the inspector's
``current_run_id`` (every task the run spawns inherits it, so the HTTP hooks can sample that run's
requests), runs the real job, and at the end posts the admin's webhook when the run failed or
ended with errors above the threshold: one short POST, failures logged, never retried, never
raised into the job.
"""

from __future__ import annotations

from typing import Any

import httpx
import structlog
from redis.exceptions import RedisError

from models import SyncRun
from services import notifications
from workers.inspector import current_run_id
from workers.send_run import send_run as run_job

log = structlog.get_logger(__name__)
WEBHOOK_TIMEOUT = httpx.Timeout(5.0, connect=3.0)


async def send_run(ctx: dict[str, Any], run_id: int) -> dict[str, Any]:
    """The send_run job with request sampling and the run-end webhook."""
    token = current_run_id.set(run_id)
    try:
        result = await run_job(ctx, run_id)
    finally:
        current_run_id.reset(token)
    if "skipped" not in result:
        await notify_run_end(ctx, run_id)
    return result


async def notify_run_end(ctx: dict[str, Any], run_id: int) -> bool:
    """Post the webhook for this run if it is due; True when a call was answered with 2xx."""
    try:
        async with ctx["sessionmaker"]() as db:
            config = await notifications.get_settings(db)
            run = await db.get(SyncRun, run_id)
            await db.commit()
        if run is None or not config.enabled or not config.webhook_url:
            return False
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
        body = notifications.payload(run, why)
        async with httpx.AsyncClient(timeout=WEBHOOK_TIMEOUT) as http:
            answer = await http.post(config.webhook_url, json=body)
        if answer.status_code >= 300:
            log.warning("webhook answered with an error", run_id=run_id, status=answer.status_code)
            return False
        log.info("webhook posted", run_id=run_id, reason=why)
        return True
    except Exception as exc:  # a webhook must never fail a run
        log.warning("webhook not delivered", run_id=run_id, error=f"{type(exc).__name__}: {exc}")
        return False
