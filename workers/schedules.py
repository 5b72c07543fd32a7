"""Jobs: the schedules cron (claim due schedules, queue their ticks) and one tick of a schedule."""

from __future__ import annotations

from typing import Any

import structlog

from services import schedules
from workers.run_hooks import notify_schedule_tick

log = structlog.get_logger(__name__)


async def schedule_ticks(ctx: dict[str, Any]) -> dict[str, Any]:
    """Queue a tick for every enabled schedule whose next run time has come (on every worker; the
    database decides which worker queues each tick)."""
    settings = ctx["settings"]
    async with ctx["sessionmaker"]() as db:
        claimed = await schedules.claim_due(db)
    for schedule_id, claim in claimed:
        await schedules.enqueue_tick(ctx["redis"], settings.queue_name, schedule_id, "cron", str(claim))
    if claimed:
        log.info("schedule ticks queued", schedules=[s for s, _ in claimed])
    return {"queued": [s for s, _ in claimed]}


async def run_schedule(ctx: dict[str, Any], schedule_id: int, trigger: str = "cron") -> dict[str, Any]:
    """One tick of one schedule: fetch what is new and start a run on it."""
    tick_ctx = schedules.TickContext(
        sessionmaker=ctx["sessionmaker"],
        settings=ctx["settings"],
        http=ctx["outbound_http"],
        arq=ctx["redis"],
        owner=schedules.tick_owner(),
    )
    result = await schedules.run_tick(tick_ctx, schedule_id, trigger)
    await notify_schedule_tick(ctx, schedule_id, result.get("outcome"))
    return result
