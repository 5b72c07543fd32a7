"""Run in a separate process: acquire N grants from the shared limiter and print their times."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from redis.asyncio import Redis

from klaviyo.endpoints import RateClass
from klaviyo.limiter import RateLimiter


async def main(prefix: str, count: int, tasks: int, scale: float, start_at: float) -> None:
    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    limiter = RateLimiter(redis, prefix=prefix, time_scale=scale)
    rate = RateClass("procs", 10, 150)
    times: list[float] = []
    remaining = [count]

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            await limiter.acquire("acct", rate)
            times.append(time.time())

    await asyncio.sleep(max(0.0, start_at - time.time()))
    await asyncio.gather(*(worker() for _ in range(tasks)))
    await redis.aclose()
    print(json.dumps(times))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])))
