"""The run reconciler is a unique arq cron job; its id must not collide across queues."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from arq.connections import ArqRedis
from arq.worker import Worker

from tests.support.env import REDIS_URL
from workers.settings import WorkerSettings, cron_jobs_for

pytestmark = pytest.mark.services


async def test_two_deployments_on_one_redis_each_queue_their_own_reconciler():
    """Two stacks sharing one Redis: at the same tick, both queues get a reconcile job (a shared id
    let the first stack's worker silently swallow the second stack's ticks)."""
    pool = ArqRedis.from_url(REDIS_URL)
    queues = [f"arq:cron:{uuid.uuid4().hex[:6]}" for _ in range(2)]
    tick = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
    try:
        for queue in queues:
            worker = Worker(
                functions=WorkerSettings.functions,
                cron_jobs=cron_jobs_for(queue),
                redis_pool=pool,
                queue_name=queue,
                handle_signals=False,
            )
            await worker.run_cron(tick, delay=0.5)
        # Every periodic job (reconciler, schedule ticks, ...) was queued on both queues.
        expected = len(cron_jobs_for(queues[0]))
        assert [await pool.zcard(queue) for queue in queues] == [expected, expected]
    finally:
        for queue in queues:
            for job_id in await pool.zrange(queue, 0, -1):
                await pool.delete(f"arq:job:{job_id.decode()}")
            await pool.delete(queue)
        await pool.aclose()
