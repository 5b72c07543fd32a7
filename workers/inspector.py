"""The request inspector's writing side: httpx event hooks on the worker's shared client.

A job that talks to Klaviyo for a run sets ``current_run_id``; tasks it spawns inherit it (asyncio
copies the context into each task), so the hooks know which run a request belongs to without the
Klaviyo client knowing about runs at all. Per run we keep the first FIRST_N exchanges and then
every 4xx/5xx, up to MAX_PER_RUN in all; the count is kept in Redis so a run taken over by another
worker does not start counting again. Samples are written in the background: a slow database
never slows a request down, and a failed write is logged and dropped.
"""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar
from typing import Any

import httpx
import structlog
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from models import RequestSample
from services.inspector import (
    BODY_LIMIT,
    ERROR_BODY_LIMIT,
    FIRST_N,
    MAX_PER_RUN,
    clip,
    redact_headers,
    redact_text,
)

log = structlog.get_logger(__name__)
current_run_id: ContextVar[int | None] = ContextVar("current_run_id", default=None)
COUNT_TTL_S = 7 * 24 * 3600


class RequestInspector:
    """Build with the worker's Redis and sessionmaker; ``hooks()`` goes to httpx.AsyncClient."""

    def __init__(
        self, redis: Redis, sessionmaker: async_sessionmaker[AsyncSession], namespace: str = "arq:queue"
    ) -> None:
        self.redis = redis
        # Consoles sharing a Redis have their own run ids: counters are kept per queue name.
        self.namespace = namespace
        self.sessionmaker = sessionmaker
        self.pending: set[asyncio.Task[None]] = set()

    def hooks(self) -> dict[str, list[Any]]:
        return {"request": [self.on_request], "response": [self.on_response]}

    async def on_request(self, request: httpx.Request) -> None:
        if current_run_id.get() is not None:
            request.extensions["kc_started"] = time.monotonic()

    async def on_response(self, response: httpx.Response) -> None:
        run_id = current_run_id.get()
        if run_id is None:
            return
        try:
            await self._maybe_sample(run_id, response)
        except Exception as exc:  # the inspector must never break a request
            log.warning("request sample skipped", run_id=run_id, error=f"{type(exc).__name__}: {exc}")

    def _key(self, run_id: int, what: str) -> str:
        return f"console:inspector:{self.namespace}:{run_id}:{what}"

    async def _maybe_sample(self, run_id: int, response: httpx.Response) -> None:
        error = response.status_code >= 400
        seen = int(await self.redis.incr(self._key(run_id, "seen")))
        if seen == 1:
            await self.redis.expire(self._key(run_id, "seen"), COUNT_TTL_S)
        if seen > FIRST_N and not error:
            return
        kept = int(await self.redis.incr(self._key(run_id, "kept")))
        if kept == 1:
            await self.redis.expire(self._key(run_id, "kept"), COUNT_TTL_S)
        if kept > MAX_PER_RUN:
            return
        await response.aread()  # the client reads it next anyway; the bytes stay cached
        request = response.request
        started = request.extensions.get("kc_started")
        limit = ERROR_BODY_LIMIT if error else BODY_LIMIT
        secret = request.headers.get("authorization", "").split(" ")[-1]
        request_body, cut_request = clip(request.content, limit)
        response_body, cut_response = clip(response.content, limit)
        sample = RequestSample(
            run_id=run_id,
            method=request.method,
            url=redact_text(str(request.url), [secret])[:500],
            status=response.status_code,
            duration_ms=int((time.monotonic() - started) * 1000) if started else None,
            request_headers=redact_headers(request.headers),
            request_body=redact_text(request_body, [secret]),
            request_bytes=len(request.content),
            response_headers=redact_headers(response.headers),
            response_body=redact_text(response_body, [secret]),
            response_bytes=len(response.content),
            truncated=cut_request or cut_response,
        )
        task = asyncio.create_task(self._write(sample))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _write(self, sample: RequestSample) -> None:
        try:
            async with self.sessionmaker() as db:
                db.add(sample)
                await db.commit()
        except Exception as exc:
            log.warning(
                "request sample not stored", run_id=sample.run_id, error=f"{type(exc).__name__}: {exc}"
            )

    async def drain(self) -> None:
        """Wait for samples still being written (worker shutdown, tests)."""
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)
