"""Sync status for the Overview and /metrics: throughput, errors, 429s and rate-limit headroom.

Everything is read from the database (batches are the ledger) and from the limiter's Redis keys,
with queries an index answers: the Overview polls these every few seconds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import Integer, case, cast, func, literal_column
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from config.settings import Settings
from klaviyo import endpoints as ep
from klaviyo.limiter import RateLimiter
from models import RowError, SyncBatch, SyncRun
from models.base import utcnow
from services.accounts import get_account, klaviyo_target

# Klaviyo's bulk-events ceiling: 2,500 events per second (10 requests/s of up to 1,000 events is
# more, but the documented event ceiling is what binds).
EVENTS_CEILING_PER_MIN = 2_500 * 60
WINDOW = timedelta(hours=24)
RATE_CLASSES = [v for v in vars(ep).values() if isinstance(v, ep.RateClass)]


def database_key(db: AsyncSession) -> str:
    """Which database a session talks to: per-process caches are kept per database."""
    return str(getattr(db.get_bind(), "url", ""))


def _minute(session: AsyncSession) -> Any:
    """Minutes since the epoch of a batch's sent_at, in SQL (PostgreSQL or SQLite)."""
    bind = session.get_bind()
    if bind.dialect.name == "sqlite":
        # `//` is integer division; `/` would be true division (a float per second, not per minute).
        return cast(func.strftime("%s", col(SyncBatch.sent_at)), Integer) // 60
    # date_part gives a double; EXTRACT's numeric is several times slower over 100k rows.
    return cast(func.floor(func.date_part("epoch", col(SyncBatch.sent_at)) / 60), Integer)


# What a run's accepted items are called on the chart, by the run's kind.
FAMILIES = {"event": "events", "order": "events", "profile": "profiles", "catalog_item": "catalog items"}


@dataclass
class Throughput:
    """Per-minute items Klaviyo accepted in the last 24 hours, by family, and the period's totals."""

    minutes: list[int] = field(default_factory=list)  # epoch seconds at each minute's start
    series: dict[str, list[int | None]] = field(default_factory=dict)  # family -> per minute
    ceiling: int = EVENTS_CEILING_PER_MIN
    batches: int = 0
    items: int = 0
    accepted: int = 0
    rejected: int = 0
    requests: int = 0
    failed_requests: int = 0
    refused: int = 0  # items in requests Klaviyo refused whole (their run failed)
    rows_failed: int = 0  # failed rows of the runs active in the window, as their pages count them
    rows_unsent: int = 0  # of those, rows that failed before any request (source or mapping)
    http_429: int = 0
    peak_per_min: int = 0
    accepted_by_family: dict[str, int] = field(default_factory=dict)

    @property
    def events(self) -> list[int | None]:
        return self.series.get("events", [None] * len(self.minutes))

    @property
    def failed(self) -> int:
        """What did not reach Klaviyo: items rejected or in refused requests, rows that never became items."""
        return self.rejected + self.refused + self.rows_unsent

    @property
    def error_rate(self) -> float:
        """Share of the window's work that failed, in percent: items sent plus rows refused before sending."""
        attempted = self.items + self.rows_unsent
        return 100.0 * self.failed / attempted if attempted else 0.0

    def chart(self) -> dict[str, Any]:
        """uPlot's columnar data: x, one series per family (events first), the events ceiling."""
        names = sorted(self.series, key=lambda n: (n != "events", n)) or ["events"]
        return {
            "x": self.minutes,
            "series": [
                {"label": f"{n.capitalize()}/min", "data": self.series.get(n, self.events)} for n in names
            ],
            "ceiling": self.ceiling,
        }


# Closed minutes never change (a batch's sent_at is the moment its answer is recorded), so each
# web process keeps their sums and asks the database only for the last few minutes. Keyed by
# database URL; a minute counts as closed CLOSE_AFTER minutes after it ends. Sums are kept per
# (minute, family of the run's kind), so the chart can show events, profiles and catalog items.
_MINUTES: dict[str, tuple[int, dict[tuple[int, str], tuple[int, ...]]]] = {}
CLOSE_AFTER = 2


async def _minute_rows(
    db: AsyncSession, start: datetime, end: datetime
) -> dict[tuple[int, str], tuple[int, ...]]:
    """Sums per (minute, run kind). PostgreSQL memoizes the run lookups: few runs, many batches."""
    minute = _minute(db).label("minute")
    unanswered = col(SyncBatch.item_count) - col(SyncBatch.accepted) - col(SyncBatch.rejected)
    query = (
        select(  # type: ignore[call-overload]
            minute,
            SyncRun.kind,
            func.count(),
            func.coalesce(func.sum(SyncBatch.item_count), 0),
            func.coalesce(func.sum(SyncBatch.accepted), 0),
            func.coalesce(func.sum(SyncBatch.rejected), 0),
            func.coalesce(func.sum(SyncBatch.attempts), 0),
            func.coalesce(func.sum(SyncBatch.http_429), 0),
            func.count().filter(col(SyncBatch.http_status) >= 400),
            # Items neither accepted nor rejected: a request refused whole, its batch closed failed.
            # (From the index's own columns, so the scan stays index-only.)
            func.coalesce(func.sum(case((unanswered > 0, unanswered), else_=0)), 0),
        )
        .join(SyncRun, col(SyncRun.id) == col(SyncBatch.run_id))
        .where(col(SyncBatch.sent_at) >= start, col(SyncBatch.sent_at) <= end)
        .group_by(literal_column("minute"), SyncRun.kind)
    )
    sums: dict[tuple[int, str], tuple[int, ...]] = {}
    for row in (await db.exec(query)).all():
        family = FAMILIES.get(row[1], str(row[1]).replace("_", " "))
        key, values = (int(row[0]), family), tuple(int(v or 0) for v in row[2:])
        before = sums.get(key)
        sums[key] = values if before is None else tuple(x + y for x, y in zip(before, values, strict=True))
    return sums


async def throughput(db: AsyncSession, now: datetime | None = None) -> Throughput:
    now = now or utcnow()
    first = int((now - WINDOW).timestamp()) // 60 + 1
    last = int(now.timestamp()) // 60
    key = database_key(db)
    closed_to, cached = _MINUTES.get(key, (first, {}))
    closed_to = max(closed_to, first)
    fresh = await _minute_rows(db, datetime.fromtimestamp(closed_to * 60, UTC), now)
    rows = {k: v for k, v in cached.items() if k[0] >= first}
    rows.update(fresh)
    new_closed = last - CLOSE_AFTER
    _MINUTES[key] = (new_closed, {k: v for k, v in rows.items() if k[0] < new_closed})

    result = Throughput()
    per_family: dict[str, dict[int, int]] = {}
    per_minute: dict[int, int] = {}
    for (m, family), (n, items, accepted, rejected, attempts, r429, failed, refused) in rows.items():
        result.batches += n
        result.items += items
        result.accepted += accepted
        result.rejected += rejected
        result.requests += attempts
        result.http_429 += r429
        result.failed_requests += failed
        result.refused += refused
        bucket = per_family.setdefault(family, {})
        bucket[m] = bucket.get(m, 0) + accepted
        per_minute[m] = per_minute.get(m, 0) + accepted
        result.accepted_by_family[family] = result.accepted_by_family.get(family, 0) + accepted
    result.minutes = [m * 60 for m in range(first, last + 1)]
    # Empty minutes are gaps (null), so the log-scaled chart has nothing to plot at zero.
    result.series = {
        family: [bucket.get(m) or None for m in range(first, last + 1)]
        for family, bucket in per_family.items()
    }
    result.peak_per_min = max(per_minute.values(), default=0)
    result.rows_failed, result.rows_unsent = await _failed_rows(db, now - WINDOW)
    return result


async def _failed_rows(db: AsyncSession, since: datetime) -> tuple[int, int]:
    """Failed rows of the (non-dry) runs active since then, and how many of them failed before sending."""
    window = (col(SyncRun.updated_at) >= since, col(SyncRun.dry_run).is_(False))
    total = (await db.exec(select(func.coalesce(func.sum(SyncRun.rows_failed), 0)).where(*window))).one()
    rows = (
        select(RowError.run_id, RowError.row_number)
        .where(
            col(RowError.run_id).in_(select(SyncRun.id).where(*window)),
            RowError.severity == "error",
            col(RowError.stage).in_(("source", "mapping")),
        )
        .distinct()
        .subquery()
    )
    unsent = (await db.exec(select(func.count()).select_from(rows))).one()
    return int(total or 0), int(unsent or 0)


@dataclass
class Headroom:
    """One rate-limit class of the account right now: grants in the steady window vs our limit."""

    name: str
    used: int
    limit: int  # what the limiter allows itself per steady window (after its safety margin)
    klaviyo_limit: int  # Klaviyo's published steady limit
    window_s: float
    waiting: int
    paused_s: float

    @property
    def percent_free(self) -> float:
        return max(0.0, 100.0 * (self.limit - self.used) / self.limit) if self.limit else 0.0


def account_key(api_key: str) -> str:
    """The account id the Klaviyo client keys its limiter by (sha256 of the key, 16 hex digits)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


async def headroom(db: AsyncSession, redis: Redis, settings: Settings) -> list[Headroom] | None:
    """Every rate class of the connected account (sandbox included); None when Redis is down or the
    stored key cannot be decrypted."""
    try:
        target = klaviyo_target(await get_account(db), settings)
    except Exception:  # a key stored under another SECRET_KEY: the Connection page says so
        return None
    account = account_key(target.api_key)
    limiter = RateLimiter(redis, time_scale=settings.klaviyo_time_scale)
    try:
        seconds, micros = await redis.time()
        now_ms = seconds * 1000 + micros / 1000
        async with redis.pipeline(transaction=False) as pipe:
            for rate in RATE_CLASSES:
                base = limiter.key(account, rate)
                pipe.zcount(f"{base}:log", now_ms - limiter.limits(rate).steady_ms, "+inf")
                pipe.get(f"{base}:paused")
                pipe.zcount(f"{base}:tickets", now_ms, "+inf")
            answers = await pipe.execute()
    except (RedisError, OSError):
        return None
    rows = []
    for i, rate in enumerate(RATE_CLASSES):
        used, paused, waiting = answers[3 * i : 3 * i + 3]
        windows = limiter.limits(rate)
        rows.append(
            Headroom(
                name=rate.name,
                used=int(used),
                limit=windows.steady,
                klaviyo_limit=rate.steady,
                window_s=windows.steady_ms / 1000,
                waiting=int(waiting),
                paused_s=max(0.0, (float(paused) - now_ms) / 1000) if paused else 0.0,
            )
        )
    return rows


def busy(rows: list[Headroom] | None) -> list[Headroom]:
    """The classes worth showing: bulk events always, others while in use."""
    return [r for r in rows or [] if r.name == ep.EVENTS_BULK.name or r.used or r.waiting or r.paused_s]
