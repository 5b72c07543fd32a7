"""The Overview and the Runs list say what happened: the error rate counts rows that failed, the
worker card counts the jobs a real worker finished, and each run names its file and mapping.
A database of each test's own, real Redis, worker and simulator."""

from __future__ import annotations

import re
import uuid

from arq.connections import ArqRedis
from litestar.testing import AsyncTestClient

from models import Role, RunStatus, SyncRun
from services.accounts import get_account
from tests.support.env import REDIS_URL, unique
from tests.support.runs import (
    csv_text,
    make_mapping,
    make_upload,
    order_rows,
    ordered_product_spec,
    spawn_worker,
    start_run,
    wait_until,
    worker_env,
)
from tests.support.web import login, make_user
from web.app import create_app


async def test_error_rate_counts_failed_rows_and_runs_name_file_and_mapping(
    fresh,
    simulator_url,
    tmp_path,
    run_worker_burst,
):
    client, maker, settings = fresh
    settings = settings.model_copy(
        update={"sandbox_url": simulator_url, "klaviyo_time_scale": 20.0, "upload_dir": tmp_path}
    )
    tag = uuid.uuid4().hex[:8]
    rows = order_rows(10, prefix=tag)
    for n in (2, 5, 8):
        rows[n]["email"] = "not an email"  # refused by the mapping: never sent
    upload = await make_upload(maker, tmp_path, csv_text(rows), f"orders-{tag}.csv")
    metric = f"Overview {tag}"
    mapping = await make_mapping(maker, ordered_product_spec(metric))
    run = await start_run(maker, settings, upload, mapping)
    await run_worker_burst(settings)
    async with maker() as db:
        done = await db.get(SyncRun, run.id)
    assert done is not None and done.status == RunStatus.COMPLETED
    assert (done.items_sent, done.rows_failed) == (7, 3)

    # Klaviyo rejected nothing, but 3 of the 10 rows failed: the rate is 3 / (7 sent + 3 unsent).
    traffic = (await client.get("/overview/traffic")).text
    assert 'data-testid="error-rate-24h">30.00%<' in traffic
    errors = re.search(r'data-testid="errors-24h">([^<]*)<', traffic)
    assert errors is not None and errors.group(1).startswith("3 rows failed · 0 items rejected")

    listing = (await client.get("/runs/")).text
    row = listing.split(f'href="/runs/{run.id}"', 1)[1].split("</tr>", 1)[0]
    assert f'data-testid="run-file">orders-{tag}.csv<' in row
    assert f'data-testid="run-mapping">test {metric} · v1<' in row


async def test_worker_card_counts_jobs_done(fresh, simulator_url, tmp_path):
    _, maker, settings = fresh
    queue = f"arq:jobs-done:{uuid.uuid4().hex[:6]}"
    settings = settings.model_copy(update={"queue_name": queue})
    async with maker() as db:
        account = await get_account(db)
        await db.commit()
    worker = spawn_worker(worker_env(settings.database_url, simulator_url, queue, tmp_path))
    try:
        async with AsyncTestClient(create_app(settings)) as client:
            viewer = await make_user(maker, unique("viewer"), Role.VIEWER)
            assert (await login(client, viewer.username)).status_code == 302

            async def card() -> str:
                page = (await client.get("/overview/status")).text
                found = re.search(r'id="workers-card">(.*?)</div>\s*<div class="kc-card">', page, re.S)
                return found.group(1) if found else ""

            async def alive() -> bool:
                return "1 alive" in await card()

            await wait_until(alive, 30, "the worker's heartbeat")
            # Its periodic checks ran at start; they are not jobs done.
            assert "· 0 jobs done" in await card()
            arq = ArqRedis.from_url(REDIS_URL)
            try:
                await arq.enqueue_job("check_connection", account.id, _queue_name=queue)
            finally:
                await arq.aclose()

            async def counted() -> bool:
                return "· 1 job done" in await card()

            await wait_until(counted, 30, "the worker card to count the finished job")
    finally:
        worker.terminate()
        worker.wait(timeout=20)
