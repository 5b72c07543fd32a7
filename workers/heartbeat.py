"""A worker announces itself in Redis every few seconds; the key expires when it stops."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.workers import heartbeat_key

INTERVAL_S = 5.0
TTL_S = 20


@dataclass
class JobCount:
    """Jobs this worker finished (any outcome); arq's job hooks get a copy of ctx, so one shared object."""

    done: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # beat now, not at the next interval

    def add(self) -> None:
        self.done += 1
        self.changed.set()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def beat_forever(redis: Redis, ctx: dict[str, Any], queue_name: str) -> None:
    """Write the heartbeat until cancelled; a Redis blip is logged by arq, not fatal here."""
    name = worker_name()
    key = heartbeat_key(queue_name, name)
    started = time.time()
    count: JobCount = ctx.setdefault("job_count", JobCount())
    try:
        while True:
            payload = {"name": name, "at": time.time(), "started": started, "jobs_done": count.done}
            with contextlib.suppress(RedisError, OSError):
                await redis.set(key, orjson.dumps(payload), ex=TTL_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(count.changed.wait(), INTERVAL_S)
            count.changed.clear()
    finally:
        with contextlib.suppress(RedisError, OSError):
            await redis.delete(key)
