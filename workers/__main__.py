"""`python -m workers`: run one arq worker (what compose and `make dev` start)."""

from __future__ import annotations

import sys

from arq import run_worker
from redis.exceptions import ConnectionError as RedisConnectionError

from config.settings import get_settings
from workers.settings import WorkerSettings


def main() -> int:
    try:
        run_worker(WorkerSettings)  # type: ignore[arg-type]
    except (RedisConnectionError, OSError) as exc:
        print(
            f"error: cannot reach Redis at {get_settings().redis_url}: {exc}\n"
            "Start Redis (e.g. `redis-server --save '' --appendonly no`) or set REDIS_URL.",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
