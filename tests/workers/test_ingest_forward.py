"""Ingested records reach the simulator through a real worker: bursts in bulk, single events alone,
each record once, transient failures retried (and listed) until they go through or run out."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import httpx
import orjson
import pytest
from arq.connections import ArqRedis
from sqlmodel import col, func, select, update

from models import InboxStatus, IngestRecord, IngestSource, Role
from models.base import utcnow
from services import ingest
from services.accounts import get_account
from tests.support.env import unique
from tests.support.ingest import bearer, event_record, event_spec, make_source, order_record, order_spec
from tests.support.runs import sim_settings


@pytest.fixture
def fwd_settings(settings, simulator_url, tmp_path):
    return sim_settings(settings, simulator_url, tmp_path)


@pytest.fixture(autouse=True)
async def sandbox_account(sessionmaker):
    """Forward to the session's simulator, whatever Klaviyo key an earlier test saved on the account
    (in the full suite, connection tests leave one that points elsewhere)."""
    async with sessionmaker() as db:
        (await get_account(db)).sandbox = True
        await db.commit()


def sim_events(simulator_url: str, metric: str) -> list[dict]:
    answer = httpx.get(f"{simulator_url}/__sim/events", params={"metric": metric}, timeout=30)
    answer.raise_for_status()
    return answer.json()["data"]


def sim_duplicates(simulator_url: str) -> int:
    return int(httpx.get(f"{simulator_url}/__sim/stats").json()["duplicates"])


def set_faults(simulator_url: str, **faults: float) -> None:
    httpx.post(f"{simulator_url}/__sim/config", json={"faults": faults}).raise_for_status()


async def status_counts(sessionmaker, source_id: int) -> dict[str, int]:
    async with sessionmaker() as db:
        rows = (
            await db.exec(
                select(IngestRecord.status, func.count())
                .where(IngestRecord.source_id == source_id)
                .group_by(col(IngestRecord.status))
            )
        ).all()
    return {str(status): int(count) for status, count in rows}


async def post(client, source_id: int, token: str, records) -> dict:
    answer = await client.post(
        f"/api/ingest/{source_id}", content=orjson.dumps(records), headers=bearer(token)
    )
    assert answer.status_code == 202, answer.text
    return answer.json()


async def test_a_burst_of_10000_events_is_delivered_once_in_bulk(
    client, sessionmaker, settings, fwd_settings, simulator_url, run_worker_burst
):
    metric = unique("Burst ")
    src, token, _, _ = await make_source(sessionmaker, settings, event_spec(metric))
    records = [event_record(n, prefix=metric) for n in range(10_000)]
    requests = [records[i : i + 100] for i in range(0, len(records), 100)]
    # Concurrent posters, and the first 500 events posted a second time by a retrying store.
    answers = []
    for start in range(0, len(requests), 20):
        answers += await asyncio.gather(
            *(post(client, src.id, token, chunk) for chunk in requests[start : start + 20])
        )
    repeats = await asyncio.gather(*(post(client, src.id, token, chunk) for chunk in requests[:5]))
    assert sum(a["accepted"] for a in answers) == 10_000
    assert sum(a["duplicates"] for a in repeats) == 500
    duplicates_before = sim_duplicates(simulator_url)

    started = time.monotonic()
    await forward(run_worker_burst, fwd_settings)
    events = sim_events(simulator_url, metric)
    assert len(events) == 10_000, f"{len(events)} of 10,000 events reached the simulator"
    assert {e["unique_id"] for e in events} == {r["id"] for r in records}
    assert sim_duplicates(simulator_url) == duplicates_before  # nothing was sent twice
    # Traffic was high: bulk jobs, and live events (flows fire), not backfill.
    assert {e["source"] for e in events} == {"bulk"} and not any(e["backfill"] for e in events)
    assert await status_counts(sessionmaker, src.id) == {"sent": 10_000}
    async with sessionmaker() as db:
        assert (await db.get(IngestSource, src.id)).sent_count == 10_000
    assert time.monotonic() - started < 60


async def test_a_lone_event_goes_out_as_a_single_create_event(
    client, sessionmaker, settings, fwd_settings, simulator_url, run_worker_burst
):
    metric = unique("Lone ")
    src, token, _, _ = await make_source(sessionmaker, settings, event_spec(metric))
    await post(client, src.id, token, event_record(7, prefix=metric))
    await forward(run_worker_burst, fwd_settings)
    events = sim_events(simulator_url, metric)
    assert [(e["unique_id"], e["source"], e["value"]) for e in events] == [(f"{metric}-7", "single", 7.5)]
    assert events[0]["profile"]["email"] == "buyer7@shop.test"
    assert await status_counts(sessionmaker, src.id) == {"sent": 1}


async def test_the_same_order_posted_twice_reaches_klaviyo_once(
    client, sessionmaker, settings, fwd_settings, simulator_url, run_worker_burst
):
    name = unique("Placed ")
    spec = order_spec(name)
    spec = spec.model_copy(
        update={
            "options": spec.options.model_copy(update={"order_metric": name, "line_metric": f"{name} line"})
        }
    )
    src, token, _, _ = await make_source(sessionmaker, settings, spec)
    order = order_record("W-5001")
    assert (await post(client, src.id, token, order))["accepted"] == 1
    await forward(run_worker_burst, fwd_settings)
    # Posted again after it went out, and twice more in one request: still one order in Klaviyo.
    again = await post(client, src.id, token, [order, order])
    assert again == {"received": 2, "accepted": 0, "duplicates": 2, "skipped": 0, "rejected": 0, "errors": []}
    await forward(run_worker_burst, fwd_settings)
    placed = sim_events(simulator_url, name)
    lines = sim_events(simulator_url, f"{name} line")
    assert [(e["unique_id"], e["value"]) for e in placed] == [("W-5001", 16.5)]
    assert sorted(e["unique_id"] for e in lines) == ["W-5001_MUG", "W-5001_TEA"]
    assert await status_counts(sessionmaker, src.id) == {"sent": 1}


async def test_records_claimed_by_a_worker_that_died_are_taken_over_by_the_next_forwarder(
    client, sessionmaker, settings, fwd_settings, simulator_url, run_worker_burst
):
    metric = unique("Orphan ")
    src, token, _, _ = await make_source(sessionmaker, settings, event_spec(metric))
    await post(client, src.id, token, [event_record(n, prefix=metric) for n in range(5)])
    # What a worker killed mid-send leaves: rows claimed under a lease still running, its lock expired.
    async with sessionmaker() as db:
        await db.exec(
            update(IngestRecord)
            .where(col(IngestRecord.source_id) == src.id)
            .values(status=InboxStatus.SENDING, attempts=1, lease_until=utcnow() + timedelta(minutes=5))
        )
        await db.commit()
    await post(client, src.id, token, event_record(5, prefix=metric))
    await forward(run_worker_burst, fwd_settings)
    assert sorted(e["unique_id"] for e in sim_events(simulator_url, metric)) == [
        f"{metric}-{n}" for n in range(6)
    ]
    assert await status_counts(sessionmaker, src.id) == {"sent": 6}


async def test_server_errors_are_retried_listed_and_then_delivered(
    client, sessionmaker, settings, fwd_settings, simulator_url, run_worker_burst, as_role
):
    metric = unique("Flaky ")
    src, token, _, _ = await make_source(sessionmaker, settings, event_spec(metric))
    set_faults(simulator_url, error_share=1.0)
    try:
        await post(client, src.id, token, [event_record(n, prefix=metric) for n in range(3)])
        await forward(run_worker_burst, fwd_settings)
    finally:
        set_faults(simulator_url, error_share=0.0)
    assert sim_events(simulator_url, metric) == []
    async with sessionmaker() as db:
        waiting = (await db.exec(select(IngestRecord).where(IngestRecord.source_id == src.id))).all()
    assert {(r.status, r.attempts, r.error_kind) for r in waiting} == {(InboxStatus.PENDING, 1, "transient")}
    assert all("HTTP 5" in (r.last_error or "") for r in waiting)
    # The source page lists them while they wait.
    await as_role(Role.VIEWER)
    page = await client.get(f"/ingest/{src.id}")
    assert 'data-testid="retrying-records"' in page.text and page.text.count(f"{metric}-") >= 3
    # Once their pause is over the sweep wakes the forwarder, and they go through.
    await asyncio.sleep(ingest.retry_delay(1, fwd_settings.klaviyo_time_scale).total_seconds() + 0.05)
    await forward(run_worker_burst, fwd_settings)
    assert sorted(e["unique_id"] for e in sim_events(simulator_url, metric)) == [
        f"{metric}-{n}" for n in range(3)
    ]
    assert await status_counts(sessionmaker, src.id) == {"sent": 3}
    page = await client.get(f"/ingest/{src.id}")
    assert 'data-testid="retrying-records"' not in page.text


async def test_retries_run_out_into_failed_records_that_can_be_retried(
    client, sessionmaker, settings, fwd_settings, simulator_url, run_worker_burst, as_role
):
    metric = unique("Down ")
    src, token, _, _ = await make_source(sessionmaker, settings, event_spec(metric))
    limited = fwd_settings.model_copy(update={"ingest_max_attempts": 2})
    set_faults(simulator_url, error_share=1.0)
    try:
        await post(client, src.id, token, event_record(1, prefix=metric))
        await forward(run_worker_burst, limited)
        await asyncio.sleep(ingest.retry_delay(1, limited.klaviyo_time_scale).total_seconds() + 0.05)
        await forward(run_worker_burst, limited)
    finally:
        set_faults(simulator_url, error_share=0.0)
    async with sessionmaker() as db:
        record = (await db.exec(select(IngestRecord).where(IngestRecord.source_id == src.id))).one()
    assert record.status == InboxStatus.FAILED and record.attempts == 2
    assert record.last_error.startswith("gave up after 2 attempts")
    await as_role(Role.OPERATOR)
    page = await client.get(f"/ingest/{src.id}")
    assert "retries ran out" in page.text and "Retry 1 failed record" in page.text
    from tests.support.web import post_form

    assert (await post_form(client, f"/ingest/{src.id}/retry", follow_redirects=False)).status_code == 303
    await forward(run_worker_burst, limited)
    assert [e["unique_id"] for e in sim_events(simulator_url, metric)] == [f"{metric}-1"]
    assert await status_counts(sessionmaker, src.id) == {"sent": 1}


async def forward(run_worker_burst, settings) -> None:
    """Run a worker until the queue is empty. The API wakes the forwarder in the background after
    answering, so the sweep (the worker's cron) first makes sure every source with due records
    has its job queued."""
    await sweep(settings)
    await run_worker_burst(settings)


async def sweep(settings) -> None:
    """What the worker's cron does every few seconds: wake every source with due records."""
    from models.db import make_engine, make_sessionmaker
    from workers.forward_ingest import sweep_ingest

    engine = make_engine(settings.database_url)
    redis = ArqRedis.from_url(settings.redis_url)
    try:
        await sweep_ingest({"settings": settings, "redis": redis, "sessionmaker": make_sessionmaker(engine)})
    finally:
        await redis.aclose()
        await engine.dispose()


async def test_ingest_and_forwarding_on_sqlite(sqlite_url, fwd_settings, simulator_url, run_worker_burst):
    """The embedded database takes the same path: one writer, so no row locks to skip."""
    from litestar.testing import AsyncTestClient

    from models.db import make_engine, make_sessionmaker
    from web.app import create_app

    lite = fwd_settings.model_copy(update={"database_url": sqlite_url})
    engine = make_engine(sqlite_url)
    sessionmaker = make_sessionmaker(engine)
    metric = unique("Lite ")
    try:
        src, token, _, _ = await make_source(sessionmaker, lite, event_spec(metric))
        async with AsyncTestClient(create_app(lite)) as client:
            records = [event_record(n, prefix=metric) for n in range(30)]
            first = await post(client, src.id, token, records[:20])
            second = await post(client, src.id, token, records[10:])
        assert (first["accepted"], second["accepted"], second["duplicates"]) == (20, 10, 10)
        await forward(run_worker_burst, lite)
        assert sorted(e["unique_id"] for e in sim_events(simulator_url, metric)) == sorted(
            r["id"] for r in records
        )
        assert await status_counts(sessionmaker, src.id) == {"sent": 30}
    finally:
        await engine.dispose()
