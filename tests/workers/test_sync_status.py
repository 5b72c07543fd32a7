"""The worker's side of sync status, end to end against the simulator: request samples taken by the
httpx hooks (key redacted, bodies clipped, errors kept whole), and the run-end webhook posted to a
real HTTP server on loopback.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from sqlmodel import col, select

from models import NotificationSettings, RequestSample, RunStatus, SyncRun
from services import notifications
from simulator.config import SANDBOX_KEY
from simulator.server import SimulatorProcess
from tests.support.runs import (
    csv_text,
    make_mapping,
    make_upload,
    order_rows,
    ordered_product_spec,
    sim_settings,
    start_run,
)
from tests.support.webhooks import Hook
from workers.run_hooks import notify_run_end


@pytest.fixture
def hook():
    server = Hook()
    yield server
    server.close()


@pytest.fixture
async def webhook_on(sessionmaker, hook):
    """Notifications on, pointing at the loopback hook; off again afterwards (the DB is shared)."""
    async with sessionmaker() as db:
        await notifications.save(db, url=hook.url, enabled=True, threshold=10.0, user=None)
        await db.commit()
    yield hook
    async with sessionmaker() as db:
        await notifications.save(db, url="", enabled=False, threshold=5.0, user=None)
        await db.commit()


@pytest.fixture
def sim():
    with SimulatorProcess(time_scale=20) as process:
        yield process


async def _send(settings, sessionmaker, tmp_path, sim, rows, run_worker_burst) -> SyncRun:
    metric = f"Status {uuid.uuid4().hex[:6]}"
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows))
    mapping = await make_mapping(sessionmaker, ordered_product_spec(metric))
    test_settings = sim_settings(settings, sim.base_url, tmp_path)
    run = await start_run(sessionmaker, settings, upload, mapping)
    await run_worker_burst(test_settings)
    async with sessionmaker() as db:
        return await db.get(SyncRun, run.id)


async def _samples(sessionmaker, run_id: int) -> list[RequestSample]:
    async with sessionmaker() as db:
        query = select(RequestSample).where(RequestSample.run_id == run_id).order_by(col(RequestSample.id))
        return list((await db.exec(query)).all())


async def test_a_run_keeps_its_first_requests_with_the_key_redacted(
    settings, sessionmaker, tmp_path, sim, run_worker_burst, webhook_on
):
    # 25 batches of 1,000 events: the first 20 exchanges are kept, the rest (all 202) are not.
    done = await _send(settings, sessionmaker, tmp_path, sim, order_rows(25_000, "s"), run_worker_burst)
    assert done.status == RunStatus.COMPLETED, done.error_message
    samples = await _samples(sessionmaker, done.id)
    assert len(samples) == 20
    first = samples[0]
    assert first.method == "POST" and first.url.endswith("/api/event-bulk-create-jobs")
    assert first.status == 202 and first.duration_ms is not None
    assert first.request_headers["authorization"] == "Klaviyo-API-Key [redacted]"
    assert first.request_headers["revision"]
    # A 1,000-event body is ~200 KB: cut at 4 KB and marked.
    assert first.request_bytes > 100_000 and len(first.request_body.encode()) <= 4096 and first.truncated
    assert '"event-bulk-create-job"' in first.request_body
    for sample in samples:
        dumped = json.dumps(sample.model_dump(mode="json"))
        assert SANDBOX_KEY not in dumped and SANDBOX_KEY[3:] not in dumped
    # A clean run is not worth a webhook call.
    assert webhook_on.received == []

    page_samples = [s.id for s in samples]
    assert page_samples == sorted(page_samples)


async def test_a_revoked_key_keeps_the_401s_whole_and_posts_the_webhook(
    settings, sessionmaker, tmp_path, sim, run_worker_burst, webhook_on
):
    with sim.admin() as admin:
        admin.post("/keys", json={"revoke": [SANDBOX_KEY]}).raise_for_status()
    done = await _send(settings, sessionmaker, tmp_path, sim, order_rows(3000, "s"), run_worker_burst)
    assert done.status == RunStatus.FAILED
    samples = await _samples(sessionmaker, done.id)
    assert samples and all(s.status == 401 for s in samples)
    error = samples[0]
    # The 401's answer is kept whole; the 370 KB request it refused is cut at 64 KB.
    assert "revoked" in error.response_body.lower() and len(error.response_body) == error.response_bytes
    assert error.request_bytes > 65536 and len(error.request_body.encode()) <= 65536 and error.truncated
    assert json.loads(error.response_body)["errors"][0]["status"] == 401
    assert SANDBOX_KEY not in error.response_body + error.request_body + json.dumps(error.request_headers)

    assert len(webhook_on.received) == 1
    body = webhook_on.received[0]
    assert body["event"] == "run.failed" and body["run_id"] == done.id and body["status"] == "failed"
    assert body["url"] == f"/runs/{done.id}" and "refused the key" in body["message"]


async def test_threshold_decides_for_completed_runs_and_a_dead_hook_never_raises(sessionmaker, settings):
    async with sessionmaker() as db:
        ok = SyncRun(kind="event", status=RunStatus.COMPLETED, rows_read=100, rows_failed=3)
        bad = SyncRun(kind="event", status=RunStatus.COMPLETED, rows_read=100, rows_failed=12)
        paused = SyncRun(kind="event", status=RunStatus.PAUSED)
        db.add_all([ok, bad, paused])
        await db.commit()
    config = NotificationSettings(enabled=True, webhook_url="http://x", error_threshold_pct=10)
    assert notifications.reason(ok, config) is None
    assert notifications.reason(bad, config) == "errors_above_threshold"
    assert notifications.reason(paused, config) is None

    from redis.asyncio import Redis

    redis = Redis.from_url(settings.redis_url)
    slow = Hook(delay=8.0)  # slower than the webhook timeout
    try:
        async with sessionmaker() as db:
            await notifications.save(db, url=slow.url, enabled=True, threshold=10.0, user=None)
            await db.commit()
        ctx = {"sessionmaker": sessionmaker, "redis": redis, "settings": settings}
        started = asyncio.get_running_loop().time()
        assert await notify_run_end(ctx, bad.id) is False  # timed out, logged, not raised
        assert asyncio.get_running_loop().time() - started < 7
        # Nothing listens here at all: refused at once, still not raised.
        async with sessionmaker() as db:
            await notifications.save(
                db, url="http://127.0.0.1:9/none", enabled=True, threshold=10.0, user=None
            )
            await db.commit()
        await redis.delete(f"console:notified:{settings.queue_name}:{bad.id}:completed")
        assert await notify_run_end(ctx, bad.id) is False
    finally:
        slow.close()
        async with sessionmaker() as db:
            await notifications.save(db, url="", enabled=False, threshold=5.0, user=None)
            await db.commit()
        await redis.aclose()


async def test_ingest_failures_post_the_webhook_once_per_quiet_period(
    settings, sessionmaker, client, webhook_on
):
    """Records of an ingest source that fail (here: refused by its mapping on receipt) are reported by
    the worker's sweep: one call with the count, then quiet for a while, then the ones failed since."""
    import orjson
    from arq.connections import ArqRedis

    from tests.support.env import unique
    from tests.support.ingest import bearer, drop_unsent_records, event_record, event_spec, make_source
    from workers.forward_ingest import sweep_ingest

    src, token, _, _ = await make_source(sessionmaker, settings, event_spec(unique("Webhook ingest ")))
    redis = ArqRedis.from_url(settings.redis_url)
    ctx = {"settings": settings, "redis": redis, "sessionmaker": sessionmaker}

    async def post_refused(*ids: str) -> None:
        body = orjson.dumps([event_record(1), *({"id": i, "email": "not-an-email"} for i in ids)])
        answer = await client.post(f"/api/ingest/{src.id}", content=body, headers=bearer(token))
        assert answer.status_code == 202 and answer.json()["rejected"] == len(ids)

    def calls() -> list[dict]:
        return [body for body in webhook_on.received if body.get("source_id") == src.id]

    try:
        assert src.id not in (await sweep_ingest(ctx))["reported"]  # the baseline: nothing failed yet
        await post_refused("a", "b", "c")
        assert (await sweep_ingest(ctx))["reported"].count(src.id) == 1
        assert calls() == [
            {
                "event": "ingest.records_failed",
                "source_id": src.id,
                "source": src.name,
                "new_failed": 3,
                "failed_total": 3,
                "url": f"/ingest/{src.id}",
            }
        ]
        await post_refused("d", "e")
        assert src.id not in (await sweep_ingest(ctx))["reported"]  # quiet period
        await redis.delete(f"console:ingest-notified:{settings.queue_name}:{src.id}")  # ... 15 min later
        assert src.id in (await sweep_ingest(ctx))["reported"]
        assert [(c["new_failed"], c["failed_total"]) for c in calls()] == [(3, 3), (2, 5)]
    finally:
        await redis.aclose()
        await drop_unsent_records(sessionmaker)
