"""Probes for load balancers and compose healthchecks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.response import File

from services.health import check_database, check_redis

PUBLIC = {"public": True}
FAVICON = Path(__file__).resolve().parents[2] / "static" / "favicon.ico"


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

    @get("/favicon.ico", opt=PUBLIC)
    async def favicon(self) -> File:
        """Browsers ask for it on every first visit (the login page too): answer instead of a 404."""
        return File(
            FAVICON,
            media_type="image/x-icon",
            content_disposition_type="inline",
            headers={"Cache-Control": "public, max-age=86400"},
        )
