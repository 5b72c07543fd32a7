"""Pause, resume and cancel a run while a real worker process is sending it."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from arq.connections import ArqRedis

from models import RunStatus, SyncRun
from services import runs
from simulator.server import SimulatorProcess
from tests.support.env import REDIS_URL
from tests.support.runs import (
    csv_text,
    make_mapping,
    make_upload,
    ordered_product_spec,
    spawn_worker,
    worker_env,
)

ROWS = 8_000


@pytest.fixture
async def slow_run(pg_url, sessionmaker, tmp_path):
    metric = f"Controls {uuid.uuid4().hex[:6]}"
    rows = [
        {
            "email": f"c{i}@shop.test",
            "order": str(i),
            "sku": "S",
            "price": "3",
            "time": "2025-01-02T00:00:00Z",
        }
        for i in range(ROWS)
    ]
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows))
    mapping = await make_mapping(sessionmaker, ordered_product_spec(metric))
    queue = f"arq:controls:{uuid.uuid4().hex[:6]}"
    with SimulatorProcess(time_scale=20) as sim:
        sim.configure(faults={"latency_min": 0.3, "latency_max": 0.5})
        env = worker_env(pg_url, sim.base_url, queue, tmp_path, SEND_CONCURRENCY="2")
        worker = spawn_worker(env)
        arq = ArqRedis.from_url(REDIS_URL)
        async with sessionmaker() as db:
            run = await runs.create_run(
                db, upload_id=upload.id, mapping_id=mapping.id, dry_run=False, backfill=True, user=None
            )
            await db.commit()
        await runs.enqueue(arq, queue, run, "start")
        try:
            yield run.id, arq, queue, sim, metric
        finally:
            worker.terminate()
            worker.wait(timeout=20)
            await arq.aclose()


async def _status_becomes(sessionmaker, run_id, wanted: set[RunStatus], timeout: float = 60) -> SyncRun:
    deadline = time.monotonic() + timeout
    while True:
        async with sessionmaker() as db:
            run = await db.get(SyncRun, run_id)
        if run.status in wanted:
            return run
        assert time.monotonic() < deadline, f"run stayed {run.status}"
        await asyncio.sleep(0.2)


def _stored(sim, metric) -> int:
    return httpx.get(f"{sim.base_url}/__sim/events", params={"metric": metric, "limit": 1}).json()["count"]


async def test_pause_then_resume_sends_everything_once(slow_run, sessionmaker):
    run_id, arq, queue, sim, metric = slow_run
    running = await _status_becomes(sessionmaker, run_id, {RunStatus.RUNNING})
    await _wait_items(sessionmaker, run_id, 1)
    async with sessionmaker() as db:
        await runs.request_pause(db, await db.get(SyncRun, run_id))
        await db.commit()
    paused = await _status_becomes(sessionmaker, run_id, {RunStatus.PAUSED})
    assert 0 < paused.items_sent < ROWS and running.started_at is not None
    await asyncio.sleep(1.5)
    assert _stored(sim, metric) == paused.items_sent  # nothing moves while paused
    async with sessionmaker() as db:
        run = await db.get(SyncRun, run_id)
        await runs.resume(db, run)
        await db.commit()
        await runs.enqueue(arq, queue, run, "resume")
    done = await _status_becomes(sessionmaker, run_id, {RunStatus.COMPLETED, RunStatus.FAILED})
    assert done.status == RunStatus.COMPLETED and done.items_sent == ROWS
    assert _stored(sim, metric) == ROWS


async def test_cancel_stops_after_the_batches_in_flight(slow_run, sessionmaker):
    run_id, arq, queue, sim, metric = slow_run
    await _wait_items(sessionmaker, run_id, 1)
    async with sessionmaker() as db:
        await runs.request_cancel(db, await db.get(SyncRun, run_id))
        await db.commit()
    cancelled = await _status_becomes(sessionmaker, run_id, {RunStatus.CANCELLED})
    assert cancelled.items_sent < ROWS and cancelled.finished_at is not None
    await asyncio.sleep(1.0)
    assert _stored(sim, metric) == cancelled.items_sent
    with pytest.raises(runs.RunError):
        async with sessionmaker() as db:
            await runs.resume(db, await db.get(SyncRun, run_id))


async def _wait_items(sessionmaker, run_id, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        async with sessionmaker() as db:
            run = await db.get(SyncRun, run_id)
        if run.items_sent >= at_least:
            return
        assert time.monotonic() < deadline, "no batch was sent"
        await asyncio.sleep(0.1)
