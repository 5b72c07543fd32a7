"""Worker fixtures: a real arq worker in burst mode, in-process, against the session's Redis queue;
settings that send runs to the session's simulator; a Klaviyo client on it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq.connections import RedisSettings
from arq.worker import Worker

from config.settings import Settings
from klaviyo.client import KlaviyoClient
from klaviyo.limiter import RateLimiter
from services.accounts import get_account
from simulator.config import SANDBOX_KEY
from workers.settings import WorkerSettings


@pytest.fixture
def run_worker_burst() -> Any:
    """Process every queued job of the settings' queue, then return."""

    async def _run(settings: Settings) -> int:
        worker = Worker(
            functions=WorkerSettings.functions,
            redis_settings=RedisSettings.from_dsn(settings.redis_url),
            queue_name=settings.queue_name,
            on_startup=WorkerSettings.on_startup,
            on_shutdown=WorkerSettings.on_shutdown,
            on_job_end=WorkerSettings.on_job_end,
            ctx={"settings": settings},
            burst=True,
            keep_result=0,
            poll_delay=0.05,
            handle_signals=False,
        )
        try:
            await worker.async_run()
        finally:
            await worker.close()
        return worker.jobs_complete

    return _run


@pytest.fixture
async def run_settings(settings, simulator_url, sessionmaker, tmp_path):
    """The session's settings with runs sent to its simulator, quickly, from this test's folder."""
    # Runs send to the sandbox (the session's simulator), whatever key an earlier test saved.
    async with sessionmaker() as db:
        account = await get_account(db)
        account.sandbox = True
        db.add(account)
        await db.commit()
    return settings.model_copy(
        update={
            "sandbox_url": simulator_url,
            "klaviyo_time_scale": 20.0,
            "upload_dir": tmp_path,
            "run_lease_seconds": 5.0,
        }
    )


@pytest.fixture
async def klaviyo(simulator_url: str, redis_client) -> AsyncIterator[KlaviyoClient]:
    """A client on the session's simulator (the sandbox account the runs send to)."""
    limiter = RateLimiter(redis_client, prefix=f"test:{uuid.uuid4().hex[:8]}", time_scale=20)
    async with KlaviyoClient(SANDBOX_KEY, base_url=simulator_url, limiter=limiter) as client:
        yield client
