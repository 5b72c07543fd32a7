"""Cron job: hand runs whose worker died (lease expired) or whose job was lost to a live worker."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import or_
from sqlmodel import col, select

from models import RunStatus, SyncRun
from models.base import aware, utcnow
from services.runs import SEND_RUN

log = structlog.get_logger(__name__)
STALE_QUEUED = timedelta(minutes=2)


async def reconcile_runs(ctx: dict[str, Any]) -> dict[str, Any]:
    """Re-enqueue running runs with an expired lease, and queued runs nobody picked up."""
    settings = ctx["settings"]
    now = utcnow()
    async with ctx["sessionmaker"]() as db:
        stale = (
            await db.exec(
                select(SyncRun).where(
                    col(SyncRun.status).in_(RunStatus.active_states()),
                    or_(col(SyncRun.lease_until).is_(None), col(SyncRun.lease_until) < now),
                )
            )
        ).all()
    requeued = []
    for run in stale:
        if run.status == RunStatus.QUEUED and (aware(run.updated_at) or now) > now - STALE_QUEUED:
            continue  # just queued: its own job is on the way
        # One id per stale lease: reconcilers on several workers queue it once.
        lease = aware(run.lease_until)
        stamp = int(lease.timestamp()) if lease else int(now.timestamp() // 60)
        job = f"{settings.queue_name}:run:{run.id}:recover:{stamp}"
        if await ctx["redis"].enqueue_job(SEND_RUN, run.id, _job_id=job) is not None:
            requeued.append(run.id)
    if requeued:
        log.info("runs handed to a live worker", runs=requeued)
    return {"requeued": requeued}
