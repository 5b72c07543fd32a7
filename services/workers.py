"""What the web side knows of the workers: heartbeats and queue depth, read from Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

HEARTBEAT_PREFIX = "console:worker:"


def heartbeat_pattern(queue_name: str, host: str = "*") -> str:
    """Heartbeat keys of the workers serving this queue (consoles sharing a Redis stay apart)."""
    return f"{HEARTBEAT_PREFIX}{queue_name}:{host}:*" if host != "*" else f"{HEARTBEAT_PREFIX}{queue_name}:*"


def heartbeat_key(queue_name: str, name: str) -> str:
    return f"{HEARTBEAT_PREFIX}{queue_name}:{name}"


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
        keys = [key async for key in redis.scan_iter(match=heartbeat_pattern(queue_name), count=100)]
        values = await redis.mget(keys) if keys else []
        workers = [orjson.loads(v) for v in values if v]
        now = time.time()
        for worker in workers:
            worker["age_s"] = round(now - worker.get("at", now), 1)
        depth = int(await redis.zcard(queue_name))
        return WorkerHealth(True, sorted(workers, key=lambda w: w.get("name", "")), depth)
    except (RedisError, OSError) as exc:
        return WorkerHealth(False, [], 0, error=f"Redis is unreachable: {exc}. Check REDIS_URL.")
