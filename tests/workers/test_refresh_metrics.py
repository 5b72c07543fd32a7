"""refresh_metrics: a real worker reads GET /api/metrics from the simulator into the Redis cache."""

from __future__ import annotations

import uuid

from klaviyo.client import KlaviyoClient
from models.db import make_engine, make_sessionmaker
from services import metric_cache
from services.accounts import SANDBOX_PRIVATE_KEY, get_account


async def test_metric_names_are_cached_with_a_timestamp(
    settings, simulator_url, run_worker_burst, redis_client
):
    test_settings = settings.model_copy(
        update={"sandbox_url": simulator_url, "klaviyo_base_url": simulator_url}
    )
    metric = f"Reviewed Product {uuid.uuid4().hex[:6]}"
    async with KlaviyoClient(SANDBOX_PRIVATE_KEY, base_url=simulator_url) as client:
        await client.create_event(
            {
                "type": "event",
                "attributes": {
                    "properties": {},
                    "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
                    "profile": {"data": {"type": "profile", "attributes": {"email": "rev@shop.test"}}},
                },
            }
        )
    engine = make_engine(test_settings.database_url)
    try:
        async with make_sessionmaker(engine)() as db:
            account = await get_account(db)
            account.sandbox = True
            db.add(account)
            await db.commit()
    finally:
        await engine.dispose()
    account_id = account.id
    await redis_client.delete(metric_cache.cache_key(account_id))
    await metric_cache.mark_refreshing(redis_client, account_id)
    from arq.connections import ArqRedis

    arq = ArqRedis.from_url(test_settings.redis_url)
    try:
        await arq.enqueue_job("refresh_metrics", account_id, _queue_name=test_settings.queue_name)
    finally:
        await arq.aclose()
    assert await run_worker_burst(test_settings) >= 1
    cache = await metric_cache.read(redis_client, account_id)
    assert metric in cache.names and cache.loaded and cache.error is None and not cache.refreshing

    # A refresh that fails keeps the names it had and says why.
    broken = test_settings.model_copy(update={"sandbox_url": "http://127.0.0.1:9"})
    arq = ArqRedis.from_url(broken.redis_url)
    try:
        await arq.enqueue_job("refresh_metrics", account_id, _queue_name=broken.queue_name)
    finally:
        await arq.aclose()
    assert await run_worker_burst(broken) >= 1
    after = await metric_cache.read(redis_client, account_id)
    assert metric in after.names and after.error and "unreachable" in after.error
    await redis_client.delete(metric_cache.cache_key(account_id))
