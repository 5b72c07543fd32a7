"""The account's Klaviyo metric names, cached in Redis by the refresh_metrics job for the studio.

Key ``console:metrics:{account_id}`` holds JSON ``{"names", "fetched_at", "error", "error_at"}``;
``console:metrics:{account_id}:refreshing`` exists while a refresh is queued or running.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from models.base import utcnow
from sync.validation import METRIC_LIMIT

REFRESH_MARK_SECONDS = 120


def cache_key(account_id: int) -> str:
    return f"console:metrics:{account_id}"


def refreshing_key(account_id: int) -> str:
    return f"console:metrics:{account_id}:refreshing"


@dataclass(frozen=True)
class MetricCache:
    """What the console last learned about the account's metrics."""

    names: list[str]
    fetched_at: datetime | None
    error: str | None = None
    refreshing: bool = False

    @property
    def loaded(self) -> bool:
        return self.fetched_at is not None

    @property
    def count(self) -> int:
        return len(self.names)

    @property
    def limit(self) -> int:
        return METRIC_LIMIT


async def read(redis: Redis, account_id: int) -> MetricCache:
    """The cached names (empty and not loaded when nothing is cached yet, or Redis is down)."""
    try:
        raw, refreshing = await redis.mget([cache_key(account_id), refreshing_key(account_id)])
    except (RedisError, OSError) as exc:
        return MetricCache([], None, error=f"Redis is unreachable ({exc}); check REDIS_URL.")
    data: dict[str, Any] = json.loads(raw) if raw else {}
    fetched = data.get("fetched_at")
    return MetricCache(
        names=list(data.get("names") or []),
        fetched_at=datetime.fromisoformat(fetched) if fetched else None,
        error=data.get("error"),
        refreshing=refreshing is not None,
    )


async def write(redis: Redis, account_id: int, names: list[str]) -> None:
    """Store a fresh list of names and clear the refreshing mark."""
    data = {"names": sorted(set(names)), "fetched_at": utcnow().isoformat(), "error": None}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(cache_key(account_id), json.dumps(data))
        pipe.delete(refreshing_key(account_id))
        await pipe.execute()


async def write_error(redis: Redis, account_id: int, message: str) -> None:
    """Keep the last good names, remember why this refresh failed, clear the refreshing mark."""
    raw = await redis.get(cache_key(account_id))
    data: dict[str, Any] = json.loads(raw) if raw else {"names": [], "fetched_at": None}
    data.update(error=message, error_at=utcnow().isoformat())
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(cache_key(account_id), json.dumps(data))
        pipe.delete(refreshing_key(account_id))
        await pipe.execute()


async def mark_refreshing(redis: Redis, account_id: int) -> None:
    await redis.set(refreshing_key(account_id), "1", ex=REFRESH_MARK_SECONDS)


async def clear_refreshing(redis: Redis, account_id: int) -> None:
    await redis.delete(refreshing_key(account_id))
