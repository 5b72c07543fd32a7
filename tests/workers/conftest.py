"""Run a real arq worker in burst mode, in-process, against the session's Redis queue."""

from __future__ import annotations

from typing import Any

import pytest
from arq.connections import RedisSettings
from arq.worker import Worker

from config.settings import Settings
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
