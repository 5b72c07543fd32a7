"""What the web side knows of the workers: heartbeats and queue depth, read from Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

HEARTBEAT_PREFIX = "console:worker:"


@dataclass
class WorkerHealth:
    redis_ok: bool
    workers: list[dict[str, Any]]
    queue_depth: int
    error: str | None = None

    @property
    def alive(self) -> int:
        return len(self.workers)


async def worker_health(redis: Redis, queue_name: str) -> WorkerHealth:
    """Live workers (heartbeat keys expire when a worker stops beating) and queued jobs."""
    try:
        keys = [key async for key in redis.scan_iter(match=f"{HEARTBEAT_PREFIX}*", count=100)]
        values = await redis.mget(keys) if keys else []
        workers = [orjson.loads(v) for v in values if v]
        now = time.time()
        for worker in workers:
            worker["age_s"] = round(now - worker.get("at", now), 1)
        depth = int(await redis.zcard(queue_name))
        return WorkerHealth(True, sorted(workers, key=lambda w: w.get("name", "")), depth)
    except (RedisError, OSError) as exc:
        return WorkerHealth(False, [], 0, error=f"Redis is unreachable: {exc}. Check REDIS_URL.")
