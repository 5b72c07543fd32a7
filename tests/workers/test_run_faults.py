"""Runs under Klaviyo's bad days: 5xx, dropped connections, a 429 storm, a key revoked mid-run."""

from __future__ import annotations

import uuid

import httpx
import pytest
from arq.connections import ArqRedis
from sqlmodel import select

from models import BatchStatus, RowError, RunStatus, SyncBatch, SyncRun
from services import runs
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


@pytest.fixture
def sim():
    with SimulatorProcess(time_scale=20) as process:
        yield process


async def _run(settings, sessionmaker, tmp_path, sim, rows, run_worker_burst, **overrides):
    metric = f"Faults {uuid.uuid4().hex[:6]}"
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows))
    mapping = await make_mapping(sessionmaker, ordered_product_spec(metric))
    test_settings = sim_settings(settings, sim.base_url, tmp_path, **overrides)
    run = await start_run(sessionmaker, settings, upload, mapping)
    await run_worker_burst(test_settings)
    for _ in range(3):
        # Under heavy faults a request may exhaust its retries; the run then fails with "Resume to
        # continue", and resuming (what an operator does) must still end with every event once.
        async with sessionmaker() as db:
            current = await db.get(SyncRun, run.id)
            if current.status != RunStatus.FAILED or "kept failing" not in (current.error_message or ""):
                break
            await runs.resume(db, current)
            await db.commit()
        arq = ArqRedis.from_url(settings.redis_url)
        await runs.enqueue(arq, settings.queue_name, current, "resume")
        await arq.aclose()
        await run_worker_burst(test_settings)
    async with sessionmaker() as db:
        done = await db.get(SyncRun, run.id)
        batches = (await db.exec(select(SyncBatch).where(SyncBatch.run_id == run.id))).all()
        errors = (await db.exec(select(RowError).where(RowError.run_id == run.id))).all()
    events = httpx.get(f"{sim.base_url}/__sim/events", params={"metric": metric, "limit": 50_000}).json()[
        "data"
    ]
    return done, batches, errors, events


async def test_5xx_drops_and_a_429_storm_end_with_every_event_once(
    settings, sessionmaker, tmp_path, sim, run_worker_burst
):
    sim.configure(
        faults={"error_share": 0.3, "drop_share": 0.1, "drop_after_commit_share": 0.1, "storm_seconds": 0.5}
    )
    # Ten requests at ~50% faults: the chance that none meets a fault is about one in a thousand.
    rows = order_rows(10_000, "f")
    done, batches, errors, events = await _run(settings, sessionmaker, tmp_path, sim, rows, run_worker_burst)
    assert done.status == RunStatus.COMPLETED, done.error_message
    ids = [e["unique_id"] for e in events]
    assert len(ids) == len(set(ids)) == 10_000
    assert done.items_sent == 10_000 and not errors
    assert all(b.status == BatchStatus.SENT for b in batches)
    assert done.requests > len(batches)  # the faults really cost retries
    stats = httpx.get(f"{sim.base_url}/__sim/stats").json()
    assert stats["rate_limited"] > 0 or stats["faults"]


async def test_revoked_key_stops_the_run_with_a_clear_message(
    settings, sessionmaker, tmp_path, sim, run_worker_burst
):
    with sim.admin() as admin:
        admin.post("/keys", json={"revoke": [SANDBOX_KEY]}).raise_for_status()
    done, batches, errors, events = await _run(
        settings, sessionmaker, tmp_path, sim, order_rows(3000, "f"), run_worker_burst
    )
    assert done.status == RunStatus.FAILED
    assert "refused the key" in done.error_message and "Connection page" in done.error_message
    stats = httpx.get(f"{sim.base_url}/__sim/stats").json()
    bulk = stats["requests"].get("POST /api/event-bulk-create-jobs", {})
    assert sum(bulk.values()) <= settings.send_concurrency + 1  # it stopped instead of hammering
    assert events == []
    # Nothing was lost: the batches are closed as failed, counting the requests that went out, and a
    # resume sends them again (tests/workers/test_failed_run_counts.py).
    assert batches and all(b.status == BatchStatus.FAILED for b in batches)
    assert done.requests == sum(bulk.values())
