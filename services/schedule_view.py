"""What the schedule page says about ticks: the state of each tick's run, and what triggered it."""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import Schedule, ScheduleTick, SyncRun

_RUN_WORDS = {
    "queued": "run queued",
    "running": "run sending",
    "pausing": "run pausing",
    "paused": "run paused",
    "cancelling": "run cancelling",
    "cancelled": "run cancelled",
    "completed": "sent",
    "failed": "run failed",
}
_OUTCOMES = {"nothing_new": "nothing new", "skipped": "skipped", "failed": "failed", "fetching": "fetching"}


async def tick_runs(db: AsyncSession, ticks: list[ScheduleTick]) -> dict[int, SyncRun]:
    """The runs the ticks started, by id (one query)."""
    ids = [t.run_id for t in ticks if t.run_id]
    if not ids:
        return {}
    rows = (await db.exec(select(SyncRun).where(col(SyncRun.id).in_(ids)))).all()
    return {run.id or 0: run for run in rows}


def outcome_label(tick: ScheduleTick, runs: dict[int, SyncRun]) -> tuple[str, str]:
    """(words, status class) for a tick: a tick that queued a run is labelled by that run's state."""
    run = runs.get(tick.run_id or 0)
    if tick.outcome == "queued_run":
        if run is None:
            return "run queued", "running"
        status = run.status.value
        css = "completed" if status == "completed" else "failed" if status == "failed" else "running"
        return _RUN_WORDS.get(status, status), css
    return _OUTCOMES.get(tick.outcome.value, tick.outcome.value), "failed" if tick.outcome == "failed" else ""


def trigger_label(tick: ScheduleTick, schedule: Schedule) -> str:
    """ "run now" for a manual tick; the timetable's own word (interval or cron) for the others."""
    if tick.trigger == "manual":
        return "run now"
    return "cron" if schedule.cron else f"every {schedule.interval_minutes or 60} min"
