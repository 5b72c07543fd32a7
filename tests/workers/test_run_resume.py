"""Kill the worker in the middle of a run: a new worker finishes it with zero loss and zero duplicates."""

from __future__ import annotations

import signal
import uuid

import httpx
from arq.connections import ArqRedis
from sqlalchemy import func
from sqlmodel import select

from models import BatchStatus, RunStatus, SyncBatch, SyncRun
from services import runs
from simulator.server import SimulatorProcess
from tests.support.env import REDIS_URL
from tests.support.runs import (
    csv_text,
    make_mapping,
    make_upload,
    ordered_product_spec,
    spawn_worker,
    wait_until,
    worker_env,
)

ROWS = 12_000


async def test_kill_worker_mid_run_then_resume(pg_url, sessionmaker, tmp_path):
    metric = f"Resume {uuid.uuid4().hex[:6]}"
    rows = [
        {
            "email": f"r{i}@shop.test",
            "order": str(50_000 + i),
            "sku": "S",
            "price": "1",
            "time": "2025-01-01T00:00:00Z",
        }
        for i in range(ROWS)
    ]
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows))
    mapping = await make_mapping(sessionmaker, ordered_product_spec(metric))
    queue = f"arq:resume:{uuid.uuid4().hex[:6]}"
    with SimulatorProcess(time_scale=20) as sim:
        # Slow answers so the kill lands while batches are in flight.
        sim.configure(faults={"latency_min": 0.2, "latency_max": 0.4}, events_visible_seconds=0)
        # The automatic check of Klaviyo runs as soon as the run completes.
        env = worker_env(
            pg_url,
            sim.base_url,
            queue,
            tmp_path,
            SEND_CONCURRENCY="3",
            VERIFY_DELAY_SECONDS="0",
            VERIFY_SETTLE_SECONDS="0",
        )
        async with sessionmaker() as db:
            run = await runs.create_run(
                db, upload_id=upload.id, mapping_id=mapping.id, dry_run=False, backfill=True, user=None
            )
            await db.commit()
        arq = ArqRedis.from_url(REDIS_URL)
        arq.default_queue_name = queue
        await runs.enqueue(arq, queue, run, "start")

        async def sent_batches() -> int:
            async with sessionmaker() as db:
                query = (
                    select(func.count())
                    .select_from(SyncBatch)
                    .where(SyncBatch.run_id == run.id, SyncBatch.status == BatchStatus.SENT)
                )
                return int((await db.exec(query)).one())

        first = spawn_worker(env)
        try:
            await wait_until(lambda: _ge(sent_batches, 3), 60, "three sent batches")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        async with sessionmaker() as db:
            halfway = await db.get(SyncRun, run.id)
        assert halfway.status == RunStatus.RUNNING and halfway.items_sent < ROWS

        second = spawn_worker(env)
        try:

            async def finished() -> bool:
                async with sessionmaker() as db:
                    current = await db.get(SyncRun, run.id)
                    return current.status.finished

            await wait_until(finished, 120, "the run to finish on the second worker")

            async def checked() -> bool:
                async with sessionmaker() as db:
                    current = await db.get(SyncRun, run.id)
                    return (current.verification or {}).get("state") not in (None, "checking")

            await wait_until(checked, 60, "the automatic check of Klaviyo")
        finally:
            second.terminate()
            second.wait(timeout=20)
        await arq.aclose()

        events = httpx.get(f"{sim.base_url}/__sim/events", params={"metric": metric, "limit": 20_000}).json()
        unique_ids = [e["unique_id"] for e in events["data"]]
        async with sessionmaker() as db:
            done = await db.get(SyncRun, run.id)
            batches = (await db.exec(select(SyncBatch).where(SyncBatch.run_id == run.id))).all()
    assert done.status == RunStatus.COMPLETED, done.error_message
    assert len(unique_ids) == ROWS and len(set(unique_ids)) == ROWS  # nothing lost, nothing stored twice
    assert done.items_sent == ROWS == sum(b.accepted for b in batches)  # the ledger agrees
    assert all(b.status == BatchStatus.SENT for b in batches)
    assert sorted(b.seq for b in batches) == list(range(len(batches)))
    # Batches resent after the kill replaced their own tally: the day's count is exact, and Klaviyo agrees.
    assert sum(b.tally["days"][metric]["2025-01-01"][0] for b in batches) == ROWS
    assert done.verification["state"] == "verified", done.verification
    assert [(d["sent"], d["held"]) for d in done.verification["days"]] == [(ROWS, ROWS)]


async def _ge(counter, n: int) -> bool:
    return await counter() >= n
