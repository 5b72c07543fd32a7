"""Overview: connection, workers and queue, runs in progress, throughput and rate-limit headroom."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.response import Template

from services import getting_started, ingest, runs, status
from services.accounts import get_account
from services.workers import worker_health
from web.deps import Db, RedisDep, SettingsDep
from web.templating import render


class OverviewController(Controller):
    include_in_schema = False

    @get("/")
    async def index(
        self, request: Request[Any, Any, Any], db: Db, redis: RedisDep, settings: SettingsDep
    ) -> Template:
        context = await self._status(db, redis, settings)
        return render(
            request,
            "overview/index.html",
            traffic=await status.throughput(db),
            steps=await getting_started.steps(db),
            **context,
        )

    @get("/overview/status")
    async def status(
        self, request: Request[Any, Any, Any], db: Db, redis: RedisDep, settings: SettingsDep
    ) -> Template:
        return render(
            request, "overview/_status.html", area="overview", **await self._status(db, redis, settings)
        )

    @get("/overview/traffic")
    async def traffic(self, request: Request[Any, Any, Any], db: Db) -> Template:
        """The 24-hour chart and its totals (polled less often than the status)."""
        return render(request, "overview/_traffic.html", area="overview", traffic=await status.throughput(db))

    async def _status(self, db: Db, redis: RedisDep, settings: SettingsDep) -> dict[str, Any]:
        limits = await status.headroom(db, redis, settings)
        return {
            "account": await get_account(db),
            "health": await worker_health(redis, settings.queue_name),
            "active_runs": await runs.active_runs(db),
            "progress": runs.progress,
            "headroom": status.busy(limits),
            "headroom_known": limits is not None,
            # Sources still taking traffic, and revoked ones with records yet to go or failed.
            "ingest_sources": [
                row
                for row in await ingest.list_sources(db)
                if row.source.active or row.stats.pending or row.stats.failed
            ],
        }
