"""The webhook: the admin's settings, and whether (and what) a finished run, a failed schedule tick
or an ingest source's failed records report."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import IngestSource, NotificationSettings, RunStatus, Schedule, SyncRun, User
from models.base import utcnow
from sync import outbound


class WebhookError(ValueError):
    """The webhook settings cannot be saved as given."""


async def get_settings(db: AsyncSession) -> NotificationSettings:
    """The one settings row (created disabled on first use)."""
    row = (
        await db.exec(select(NotificationSettings).order_by(col(NotificationSettings.id)).limit(1))
    ).first()
    if row is None:
        row = NotificationSettings()
        db.add(row)
        await db.flush()
    return row


async def save(
    db: AsyncSession,
    *,
    url: str,
    enabled: bool,
    threshold: float,
    user: User | None,
    allow: outbound.AllowList | None = None,
) -> NotificationSettings:
    """Store the webhook settings. With ``allow`` the URL's host is resolved and refused when it is
    not public (nor allowed); every call is checked again where it connects."""
    url = url.strip()
    if url:
        problem = (
            await outbound.url_problem(url, allow, "webhook URL")
            if allow is not None
            else outbound.check_syntax(url, "webhook URL")
        )
        if problem:
            raise WebhookError(problem)
    if enabled and not url:
        raise WebhookError("Give a webhook URL before turning notifications on.")
    if not 0 <= threshold <= 100:
        raise WebhookError("The error threshold is a percentage between 0 and 100.")
    row = await get_settings(db)
    row.webhook_url = url or None
    row.enabled = enabled
    row.error_threshold_pct = threshold
    row.updated_by = user.id if user else None
    row.updated_at = utcnow()
    db.add(row)
    await db.flush()
    return row


def error_pct(run: SyncRun) -> float:
    """Failed rows as a percentage of the rows read."""
    return 100.0 * run.rows_failed / run.rows_read if run.rows_read else 0.0


def reason(run: SyncRun, config: NotificationSettings) -> str | None:
    """Why this finished run is worth a call, or None. Paused and cancelled runs are not."""
    if run.status == RunStatus.FAILED:
        return "failed"
    if run.status == RunStatus.COMPLETED and run.rows_failed and error_pct(run) > config.error_threshold_pct:
        return "errors_above_threshold"
    return None


def payload(run: SyncRun, why: str, base_url: str | None = None) -> dict[str, Any]:
    """The small JSON body the webhook receives."""
    return {
        "event": f"run.{why}",
        "run_id": run.id,
        "status": run.status.value,
        "kind": run.kind,
        "dry_run": run.dry_run,
        "rows_read": run.rows_read,
        "rows_failed": run.rows_failed,
        "error_pct": round(error_pct(run), 2),
        "items_sent": run.items_sent,
        "message": run.error_message,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        # What the last check of Klaviyo found (proof of landing), when the run has been checked.
        "verification": _verification(run),
        "url": f"{base_url.rstrip('/')}/runs/{run.id}" if base_url else f"/runs/{run.id}",
    }


def _verification(run: SyncRun) -> dict[str, Any] | None:
    found = run.verification or {}
    if not found.get("checked_at"):
        return None
    short = [d for d in found.get("days") or [] if d.get("short")]
    return {
        "state": found.get("state"),
        "message": found.get("message"),
        "checked_at": found.get("checked_at"),
        "short_days": [
            {"metric": d["metric"], "day": d["day"], "difference": d["difference"]} for d in short
        ][:50],
    }


def ingest_payload(source: IngestSource, new_failed: int, base_url: str | None = None) -> dict[str, Any]:
    """The webhook body when records of an ingest source failed since the last call about it."""
    path = f"/ingest/{source.id}"
    return {
        "event": "ingest.records_failed",
        "source_id": source.id,
        "source": source.name,
        "new_failed": new_failed,
        "failed_total": source.failed_count,
        "url": f"{base_url.rstrip('/')}{path}" if base_url else path,
    }


def schedule_payload(schedule: Schedule, base_url: str | None = None) -> dict[str, Any]:
    """The webhook body when a schedule's tick failed (its feed could not be fetched or read)."""
    path = f"/schedules/{schedule.id}"
    return {
        "event": "schedule.tick_failed",
        "schedule_id": schedule.id,
        "schedule": schedule.name,
        "message": schedule.last_message,
        "failed_at": schedule.last_tick_at.isoformat() if schedule.last_tick_at else None,
        "url": f"{base_url.rstrip('/')}{path}" if base_url else path,
    }
