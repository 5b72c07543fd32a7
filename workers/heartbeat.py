"""A worker announces itself in Redis every few seconds; the key expires when it stops."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.workers import heartbeat_key

INTERVAL_S = 5.0
TTL_S = 20


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def beat_forever(redis: Redis, ctx: dict[str, Any], queue_name: str) -> None:
    """Write the heartbeat until cancelled; a Redis blip is logged by arq, not fatal here."""
    name = worker_name()
    key = heartbeat_key(queue_name, name)
    started = time.time()
    try:
        while True:
            payload = {
                "name": name,
                "at": time.time(),
                "started": started,
                "jobs_done": ctx.get("jobs_complete", 0),
            }
            with contextlib.suppress(RedisError, OSError):
                await redis.set(key, orjson.dumps(payload), ex=TTL_S)
            await asyncio.sleep(INTERVAL_S)
    finally:
        with contextlib.suppress(RedisError, OSError):
            await redis.delete(key)
