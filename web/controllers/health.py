"""Probes for load balancers and compose healthchecks."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get
from litestar.datastructures import State

from services.health import check_database, check_redis

PUBLIC = {"public": True}


class HealthController(Controller):
    include_in_schema = False

    @get("/healthz", opt=PUBLIC)
    async def healthz(self) -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @get("/readyz", opt=PUBLIC)
    async def readyz(self, state: State) -> Response[dict[str, Any]]:
        """Database reachable and migrated, Redis reachable."""
        checks = [await check_database(state.engine), await check_redis(state.redis)]
        ready = all(ok for ok, _ in checks)
        body = {"status": "ready" if ready else "not ready", "checks": [msg for _, msg in checks]}
        return Response(body, status_code=200 if ready else 503)
