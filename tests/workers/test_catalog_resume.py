"""Kill the worker in the middle of a catalog sync: a new worker finishes it, every item lands once,
and the sync state says exactly what Klaviyo holds (creates whose outcome was lost become updates)."""

from __future__ import annotations

import signal
import uuid

import httpx
from arq.connections import ArqRedis
from sqlalchemy import func
from sqlmodel import select

from models import BatchStatus, CatalogState, RunStatus, SyncBatch, SyncRun
from services import catalog, runs
from simulator.server import SimulatorProcess
from tests.support.env import REDIS_URL
from tests.support.runs import csv_text, make_mapping, make_upload, spawn_worker, wait_until, worker_env
from tests.support.specs import item_spec

ITEMS = 3_000


async def test_kill_worker_mid_sync_then_resume(pg_url, sessionmaker, tmp_path):
    tag = uuid.uuid4().hex[:8]
    rows = [
        {"sku": f"{tag}-{n}", "name": f"Bowl {n}", "about": "Porcelain", "link": f"https://shop.test/b/{n}",
         "price": f"{5 + n % 40}.00"}
        for n in range(ITEMS)
    ]  # fmt: skip
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "catalog.csv")
    mapping = await make_mapping(sessionmaker, item_spec(f"resume {tag}"))
    queue = f"arq:catalog-resume:{uuid.uuid4().hex[:6]}"
    with SimulatorProcess(time_scale=20) as sim:
        # Slow answers so the kill lands while jobs are in flight.
        sim.configure(faults={"latency_min": 0.1, "latency_max": 0.3})
        env = worker_env(pg_url, sim.base_url, queue, tmp_path, CATALOG_JOBS_IN_FLIGHT="6")
        async with sessionmaker() as db:
            run = await runs.create_run(
                db, upload_id=upload.id, mapping_id=mapping.id, dry_run=False, backfill=True, user=None
            )
            await db.commit()
        arq = ArqRedis.from_url(REDIS_URL)
        await runs.enqueue(arq, queue, run, "start")

        async def sent_batches() -> bool:
            async with sessionmaker() as db:
                query = (
                    select(func.count())
                    .select_from(SyncBatch)
                    .where(SyncBatch.run_id == run.id, SyncBatch.status == BatchStatus.SENT)
                )
                return int((await db.exec(query)).one()) >= 5

        first = spawn_worker(env)
        try:
            await wait_until(sent_batches, 60, "five settled jobs")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        async with sessionmaker() as db:
            halfway = await db.get(SyncRun, run.id)
            landed = (await db.exec(select(func.count()).where(CatalogState.last_run_id == run.id))).one()
        assert halfway.status == RunStatus.RUNNING and 0 < landed < ITEMS

        second = spawn_worker(env)
        try:

            async def finished() -> bool:
                async with sessionmaker() as db:
                    current = await db.get(SyncRun, run.id)
                    return current.status.finished

            await wait_until(finished, 120, "the sync to finish on the second worker")
        finally:
            second.terminate()
            second.wait(timeout=20)
        await arq.aclose()
        stored = [i for i in httpx.get(f"{sim.base_url}/__sim/catalog").json()["items"] if tag in i["id"]]

    async with sessionmaker() as db:
        done = await db.get(SyncRun, run.id)
        counts = await catalog.outcome(db, done)
        state = (await db.exec(select(CatalogState).where(CatalogState.last_run_id == run.id))).all()
    assert done.status == RunStatus.COMPLETED, done.error_message
    assert done.rows_failed == 0
    assert sorted(i["external_id"] for i in stored) == sorted(r["sku"] for r in rows)
    # Every item is remembered once, as created (or as updated where a lost create was adopted).
    assert len(state) == ITEMS and {s.external_id for s in state} == {r["sku"] for r in rows}
    assert counts["created"] + counts["updated"] == ITEMS and counts["unchanged"] == 0
