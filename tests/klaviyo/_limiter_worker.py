"""Run in a separate process: take grants from the shared limiter and print their times.

    python -m tests.klaviyo._limiter_worker PREFIX COUNT TASKS SCALE START_AT [RUN_ID DURATION]

With a DURATION, tasks keep asking until it has passed (COUNT is ignored).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from redis.asyncio import Redis

from klaviyo.endpoints import RateClass
from klaviyo.limiter import RateLimiter


async def main(
    prefix: str, count: int, tasks: int, scale: float, start_at: float, run_id: str, duration: float
) -> None:
    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    limiter = RateLimiter(redis, prefix=prefix, time_scale=scale)
    rate = RateClass("procs", 10, 150)
    times: list[float] = []
    remaining = [count]

    async def worker() -> None:
        while (time.time() < stop) if duration else remaining[0] > 0:
            remaining[0] -= 1
            await limiter.acquire("acct", rate, run_id)
            times.append(time.time())

    await asyncio.sleep(max(0.0, start_at - time.time()))
    stop = time.time() + duration
    await asyncio.gather(*(worker() for _ in range(tasks)))
    await redis.aclose()
    print(json.dumps(times))


if __name__ == "__main__":
    run_id = sys.argv[6] if len(sys.argv) > 6 else "default"
    duration = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
    asyncio.run(
        main(
            sys.argv[1],
            int(sys.argv[2]),
            int(sys.argv[3]),
            float(sys.argv[4]),
            float(sys.argv[5]),
            run_id,
            duration,
        )
    )
