"""Jobs: poll Klaviyo's consent metrics into the ledger, and deliver the ledger to stores' webhooks.

Polling reads each consent metric's events (found by name with Get Metrics) from the Events API
since that metric's high-water mark, page by page through the shared limiter; each page is stored
and its mark advanced in one transaction, so a worker that dies resumes after the last stored page
and an outage of any length is caught up on the next poll. The window starts a few minutes before
the mark, because Klaviyo may index an event a little after its time; the ledger's unique event id
keeps each event once.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import structlog
from redis.exceptions import RedisError
from sqlmodel import col, select

from config.crypto import decrypt_secret
from klaviyo.client import KlaviyoClient
from klaviyo.errors import KlaviyoError
from klaviyo.limiter import RateLimiter
from klaviyo.retry import RetryPolicy
from models import ConsentDelivery, ConsentIntegration, ConsentPollState
from models.base import aware, utcnow
from services import consent
from services.accounts import get_account, klaviyo_target
from sync.consent import CONSENT_METRICS, change_from_event, outbound_signature, parse_when

log = structlog.get_logger(__name__)
POLL_LEASE = timedelta(minutes=10)
# Klaviyo may make an event readable a little after its own time: re-read this much before the mark.
OVERLAP = timedelta(minutes=5)
# A first poll (no mark yet) reads back this far from when polling started.
FIRST_LOOKBACK = timedelta(days=1)
DELIVERY_BATCH = 100
DELIVERY_LOCK_S = 120


def _owner() -> str:
    return f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def poll_consent(ctx: dict[str, Any]) -> dict[str, Any]:
    """One poll of every consent metric; skipped while another poll holds the lease."""
    settings = ctx["settings"]
    sessionmaker = ctx["sessionmaker"]
    owner = _owner()
    async with sessionmaker() as db:
        state = await consent.poll_state(db)
        if not state.enabled:
            await db.commit()
            return {"status": "disabled"}
        if not await consent.claim_poll(db, owner, POLL_LEASE):
            return {"status": "busy"}
        target = klaviyo_target(await get_account(db), settings)
        await db.commit()
    scale = settings.klaviyo_time_scale
    client = KlaviyoClient(
        target.api_key,
        base_url=target.base_url,
        limiter=RateLimiter(ctx["redis"], time_scale=scale),
        http=ctx["http"],
        retry=RetryPolicy(max_attempts=4, max_time=60.0 / scale, base=0.5 / scale, cap=5.0 / scale),
    ).for_run("consent-poll")
    read = new = pages = 0
    error: str | None = None
    try:
        metrics = {
            str((m.get("attributes") or {}).get("name")): str(m["id"])
            for m in await client.get_metrics()
            if (m.get("attributes") or {}).get("name") in CONSENT_METRICS
        }
        for name, metric_id in sorted(metrics.items()):
            async with sessionmaker() as db:
                state = await consent.poll_state(db)
                mark = parse_when(state.marks.get(metric_id))
                start = aware(state.started_at) or utcnow()
                await db.commit()
            since = (mark - OVERLAP) if mark else (start - FIRST_LOOKBACK)
            async for events, profiles in client.get_event_pages(metric_id, since.isoformat()):
                pages += 1
                read += len(events)
                changes = []
                for event in events:
                    ref = ((event.get("relationships") or {}).get("profile") or {}).get("data") or {}
                    change = change_from_event(event, name, profiles.get(str(ref.get("id"))))
                    if change is not None:
                        changes.append(change)
                newest = max((c.occurred_at for c in changes), default=None)
                async with sessionmaker() as db:
                    new += await consent.record_changes(db, changes, "poll")
                    await _advance(db, owner, name, metric_id, newest, len(events))
                    await db.commit()
    except (KlaviyoError, httpx.HTTPError) as exc:
        error = f"Could not read consent events from Klaviyo: {exc}"
    finally:
        async with sessionmaker() as db:
            state = await consent.poll_state(db)
            now = utcnow()
            state.last_polled_at = now
            if error is None:
                state.last_success_at, state.failures, state.last_error = now, 0, None
            else:
                state.failures += 1
                state.last_error = error[:500]
            if state.lease_owner == owner:
                state.lease_owner, state.lease_until = None, None
            db.add(state)
            await db.commit()
    if new:
        await wake_delivery(ctx["redis"], settings.queue_name)
    log.info("consent polled", pages=pages, events=read, new=new, error=error)
    return {"status": "failed" if error else "ok", "pages": pages, "events": read, "new": new}


async def _advance(
    db: Any, owner: str, name: str, metric_id: str, newest: datetime | None, events: int
) -> None:
    state: ConsentPollState = await consent.poll_state(db)
    marks = dict(state.marks)
    old = parse_when(marks.get(metric_id))
    if newest is not None and (old is None or newest > old):
        marks[metric_id] = newest.isoformat()
    state.marks = marks
    state.metric_ids = {**state.metric_ids, name: metric_id}
    state.events_read += events
    if events:
        state.last_received_at = utcnow()
    # A long catch-up keeps its lease.
    if state.lease_owner == owner:
        state.lease_until = utcnow() + POLL_LEASE
    db.add(state)


# --- out to the store ---------------------------------------------------------------------------


async def wake_delivery(redis: Any, queue_name: str) -> None:
    """Queue a delivery pass now (one at a time: the job id is fixed while one waits)."""
    try:
        await redis.enqueue_job("deliver_consent", _job_id=f"{queue_name}:consent-deliver")
    except (RedisError, OSError) as exc:  # the cron's sweep delivers it soon anyway
        log.warning("consent delivery wake-up lost", error=str(exc))


async def deliver_consent(ctx: dict[str, Any]) -> dict[str, Any]:
    """Deliver new changes to every integration with a webhook whose retry pause is over."""
    now = utcnow()
    async with ctx["sessionmaker"]() as db:
        query = select(ConsentIntegration.id).where(col(ConsentIntegration.webhook_url).is_not(None))
        ids = [int(i) for i in (await db.exec(query)).all()]
        due = []
        for integration_id in ids:
            row = await db.get(ConsentIntegration, integration_id)
            if row is not None and (
                row.next_attempt_at is None or (aware(row.next_attempt_at) or now) <= now
            ):
                due.append(integration_id)
    sent = 0
    for integration_id in due:
        sent += await deliver_integration(ctx, integration_id)
    return {"integrations": len(due), "sent": sent}


async def deliver_integration(ctx: dict[str, Any], integration_id: int) -> int:
    """Post this integration's undelivered changes in id order, in batches; stop at the first failure
    (later changes wait behind it, so the store gets them in order) and pause before retrying."""
    settings = ctx["settings"]
    redis = ctx["redis"]
    lock = f"console:consent-deliver:{settings.queue_name}:{integration_id}"
    token = uuid.uuid4().hex
    if not await redis.set(lock, token, nx=True, ex=DELIVERY_LOCK_S):
        return 0
    sent = 0
    try:
        while True:
            async with ctx["sessionmaker"]() as db:
                row = await db.get(ConsentIntegration, integration_id)
                if row is None or not row.webhook_url or not row.webhook_secret_encrypted:
                    return sent
                batch = await consent.changes_after(db, row.delivered_through, DELIVERY_BATCH)
                url, secret = row.webhook_url, decrypt_secret(settings.secret, row.webhook_secret_encrypted)
                attempt = row.attempts + 1
                await db.commit()
            if not batch:
                return sent
            body = orjson.dumps({"changes": [consent.change_dict(c) for c in batch]})
            stamp = str(int(utcnow().timestamp()))
            headers = {
                "Content-Type": "application/json",
                "X-Consent-Timestamp": stamp,
                "X-Consent-Signature": outbound_signature(secret, body, stamp),
                "X-Consent-Integration": str(integration_id),
            }
            status: int | None = None
            problem: str | None = None
            try:
                answer = await ctx["outbound_http"].post(url, content=body, headers=headers)
                status = answer.status_code
                if not 200 <= status < 300:
                    problem = f"the store answered {status}"
            except httpx.HTTPError as exc:
                problem = str(exc) or type(exc).__name__
            first, last = batch[0].id or 0, batch[-1].id or 0
            async with ctx["sessionmaker"]() as db:
                row = await db.get(ConsentIntegration, integration_id)
                if row is None:
                    return sent
                db.add(
                    ConsentDelivery(
                        integration_id=integration_id,
                        first_change_id=first,
                        last_change_id=last,
                        count=len(batch),
                        attempt=attempt,
                        ok=problem is None,
                        status_code=status,
                        error=problem[:500] if problem else None,
                    )
                )
                now = utcnow()
                if problem is None:
                    row.delivered_through = max(row.delivered_through, last)
                    row.attempts, row.next_attempt_at, row.last_error = 0, None, None
                    row.last_delivery_at = now
                else:
                    row.attempts = attempt
                    row.next_attempt_at = now + consent.retry_pause(attempt, settings.klaviyo_time_scale)
                    row.last_error = problem[:500]
                db.add(row)
                await db.commit()
            if problem is not None:
                log.info(
                    "consent delivery failed", integration=integration_id, attempt=attempt, error=problem
                )
                return sent
            sent += len(batch)
            await redis.expire(lock, DELIVERY_LOCK_S)
    finally:
        if await redis.get(lock) == token.encode():
            await redis.delete(lock)
