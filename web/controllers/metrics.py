"""Prometheus metrics for scrapers: public like /healthz, or behind METRICS_TOKEN when it is set."""

from __future__ import annotations

import hmac
from typing import Any

from litestar import Controller, Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST

from services.metrics import render_metrics
from web.deps import Db, RedisDep, SettingsDep


class MetricsController(Controller):
    include_in_schema = False

    @get("/metrics", opt={"public": True})
    async def metrics(
        self, request: Request[Any, Any, Any], db: Db, redis: RedisDep, settings: SettingsDep
    ) -> Response[bytes]:
        if settings.metrics_token is not None:
            expected = f"Bearer {settings.metrics_token.get_secret_value()}"
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return Response(
                    b"metrics need Authorization: Bearer <METRICS_TOKEN>\n",
                    status_code=401,
                    media_type="text/plain",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        body = await render_metrics(db, redis, settings)
        return Response(body, media_type=CONTENT_TYPE_LATEST)
