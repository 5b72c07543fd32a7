"""`python -m workers.healthcheck`: exit 0 when this host's worker beat recently (compose healthcheck)."""

from __future__ import annotations

import socket
import sys

import redis

from config.settings import get_settings
from services.workers import heartbeat_pattern


def main() -> int:
    settings = get_settings()
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2)
    try:
        keys = list(client.scan_iter(match=heartbeat_pattern(settings.queue_name, socket.gethostname())))
    except (redis.RedisError, OSError) as exc:
        print(f"unhealthy: redis unreachable: {exc}", file=sys.stderr)
        return 1
    if not keys:
        print("unhealthy: no recent heartbeat from a worker on this host", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
