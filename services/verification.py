"""Reads and writes of a run's check against Klaviyo (proof of landing); the check itself runs in
workers/verify_run.py, the comparisons in sync/verification.py."""

from __future__ import annotations

import random
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from arq.connections import ArqRedis
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import BatchStatus, RowError, RunStatus, SyncBatch, SyncRun
from models.base import utcnow
from sync import verification as v

VERIFY_RUN = "verify_run"
EVENT_KINDS = frozenset({"event", "order"})
MEMBER_KINDS = frozenset({"list_membership", "list_membership_remove", "subscription"})
SAMPLE_KINDS = frozenset({"profile", "catalog_item"}) | MEMBER_KINDS
# Kinds a check can read back from Klaviyo; the others say so instead of offering a button.
VERIFIABLE = EVENT_KINDS | SAMPLE_KINDS
# Row warnings that mean another row sends the same profile: a later row overwrites what this one sent.
STALLED_AFTER = timedelta(minutes=10)
ON_ROW = re.compile(r"\bon row (\d+)\b")
SHARED_IDENTITY = ("duplicate_email", "duplicate_phone", "duplicate_external_id", "example_address")


class VerifyError(ValueError):
    """A run that cannot be checked, with the reason for the operator."""


def can_verify(run: SyncRun) -> str | None:
    """Why this run cannot be checked against Klaviyo, or None when it can."""
    if run.dry_run:
        return "A dry run sent nothing to Klaviyo."
    if run.kind not in VERIFIABLE:
        return f"Checking {run.kind.replace('_', ' ')} runs against Klaviyo is not available yet."
    if not run.status.finished and run.status != RunStatus.PAUSED:
        return "The run is still sending; check it once it has finished."
    if run.items_sent == 0:
        return "Klaviyo accepted nothing from this run."
    return None


def stalled(run: SyncRun, now: datetime | None = None) -> bool:
    """A check asked for long ago that never reported (no worker took it): offer to ask again."""
    found = run.verification or {}
    if found.get("state") != v.CHECKING or not found.get("requested_at"):
        return False
    asked = datetime.fromisoformat(str(found["requested_at"]))
    if asked.tzinfo is None:
        asked = asked.replace(tzinfo=UTC)
    return (now or datetime.now(UTC)) - asked > STALLED_AFTER


def job_id(queue_name: str, run_id: int, nonce: str) -> str:
    return f"{queue_name}:verify:{run_id}:{nonce}"


async def request_check(
    db: AsyncSession, arq: ArqRedis, queue_name: str, run: SyncRun, *, auto: int = 0, defer: float = 0.0
) -> None:
    """Queue a check of the run (now, or after ``defer`` seconds) and mark it as being checked."""
    why = can_verify(run)
    if why is not None:
        raise VerifyError(why)
    previous = run.verification or {}
    if not auto:
        run.verification = {**previous, "state": v.CHECKING, "requested_at": utcnow().isoformat()}
        db.add(run)
        await db.commit()
    nonce = f"auto{auto}" if auto else uuid.uuid4().hex[:8]
    await arq.enqueue_job(
        VERIFY_RUN,
        run.id,
        auto,
        _job_id=job_id(queue_name, run.id or 0, nonce),
        _queue_name=queue_name,
        _defer_by=defer or None,
    )


async def sent_tally(db: AsyncSession, run_id: int) -> dict[str, dict[str, dict[str, list[float]]]]:
    """The run's accepted events per time zone, metric and day, summed over its sent batches."""
    query = select(SyncBatch.tally).where(
        SyncBatch.run_id == run_id, SyncBatch.status == BatchStatus.SENT, col(SyncBatch.tally).is_not(None)
    )
    tallies: list[Any] = list((await db.exec(query)).all())
    return v.merge_tallies(tallies)


async def sample_rows(
    db: AsyncSession, run: SyncRun, size: int, rng: random.Random | None = None
) -> list[int]:
    """Up to ``size`` random rows of the run that did not fail and send their own profile."""
    candidates = list(run.only_rows) if run.only_rows is not None else list(range(1, run.cursor_row + 1))
    left_out = select(RowError.row_number, RowError.rule, RowError.message).where(
        RowError.run_id == run.id,
        (col(RowError.severity) == "error") | col(RowError.rule).in_(SHARED_IDENTITY),
    )
    skip: set[int] = set()
    for row_number, rule, message in (await db.exec(left_out)).all():
        skip.add(row_number)
        # The earlier row a shared identity names ("... is also on row 12") is overwritten too.
        earlier = ON_ROW.search(message or "") if rule in SHARED_IDENTITY else None
        if earlier:
            skip.add(int(earlier.group(1)))
    chooser = rng or random.SystemRandom()
    chooser.shuffle(candidates)
    chosen: list[int] = []
    for row in candidates:
        if row not in skip:
            chosen.append(row)
            if len(chosen) >= size:
                break
    return sorted(chosen)


async def save(db: AsyncSession, run_id: int, result: dict[str, Any]) -> SyncRun | None:
    """Store a check's result on the run (the latest check replaces the one before)."""
    run = await db.get(SyncRun, run_id)
    if run is None:
        return None
    run.verification = result
    run.updated_at = utcnow()
    db.add(run)
    await db.commit()
    return run
