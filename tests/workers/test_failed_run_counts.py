"""A run that fails counts the requests that went out, closes its batches, and the Overview's error
rate shows it; a resume sends the closed batches again. Real PostgreSQL, Redis, worker, web app and
simulator."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
from sqlmodel import col, select

from models import BatchStatus, Role, RunStatus, SyncBatch, SyncRun
from services import status
from tests.support.env import unique
from tests.support.runs import (
    csv_text,
    make_mapping,
    make_upload,
    order_rows,
    ordered_product_spec,
    run_to_end,
    start_run,
)
from tests.support.specs import variant_spec
from tests.support.web import post_form


def _refused_variant_posts(simulator_url: str) -> int:
    stats = httpx.get(f"{simulator_url}/__sim/stats").json()["requests"]
    return sum(
        int(by_status.get("401", 0))
        for name, by_status in stats.items()
        if "variant" in name and "POST" in name
    )


async def test_refused_catalog_variant_run_counts_its_requests_and_closes_its_batches(
    run_settings,
    sessionmaker,
    tmp_path,
    run_worker_burst,
    simulator_url,
    client,
    as_role,
):
    settings = run_settings.model_copy(update={"klaviyo_base_url": simulator_url})
    tag = uuid.uuid4().hex[:8]
    key = f"pk_refused_{tag}_000000000000000000"
    httpx.post(f"{simulator_url}/__sim/keys", json={"add": [{"key": key}]}).raise_for_status()
    await as_role(Role.ADMIN)
    assert (await post_form(client, "/connection/key", {"private_key": key})).status_code == 200
    # The key is revoked after it was saved: every request of the run is refused (401).
    httpx.post(f"{simulator_url}/__sim/keys", json={"revoke": [key]}).raise_for_status()
    rows = [
        {"sku": f"{tag}-{n}", "vsku": f"{tag}-{n}-blue", "name": f"Mug {n}", "about": "Stoneware",
         "link": f"https://shop.test/{n}", "price": "12.00", "stock": "3"}
        for n in range(1_000)
    ]  # fmt: skip
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "variants.csv")
    mapping = await make_mapping(sessionmaker, variant_spec(unique("refused variants ")))
    async with sessionmaker() as db:
        before = await status.throughput(db)
    posts_before = _refused_variant_posts(simulator_url)
    try:
        run = await run_to_end(sessionmaker, run_worker_burst, settings, upload, mapping)
    finally:
        await post_form(client, "/connection/sandbox")

    # Ten batches of 100 went out and Klaviyo refused each: the run says ten requests, not zero.
    assert _refused_variant_posts(simulator_url) - posts_before == 10
    assert run.status == RunStatus.FAILED and "refused the key" in (run.error_message or "")
    assert (run.requests, run.items_sent) == (10, 0)
    async with sessionmaker() as db:
        query = select(SyncBatch).where(SyncBatch.run_id == run.id).order_by(col(SyncBatch.seq))
        batches = (await db.exec(query)).all()
        after = await status.throughput(db)
    assert [(b.status, b.attempts, b.http_status, b.item_count) for b in batches] == [
        (BatchStatus.FAILED, 1, 401, 100)
    ] * 10
    assert all(b.sent_at is not None for b in batches)

    page = (await client.get(f"/runs/{run.id}")).text
    assert re.search(r"<h2>Requests</h2><div class=\"big\">10</div>", page)

    # The Overview counts the refused requests and their items in its error rate.
    assert after.failed_requests - before.failed_requests == 10
    assert after.refused - before.refused == 1_000
    assert after.error_rate > before.error_rate or before.error_rate == 100.0
    traffic = (await client.get("/overview/traffic")).text
    shown = re.search(r'data-testid="error-rate-24h">([0-9.]+)%', traffic)
    assert shown is not None and float(shown.group(1)) == round(after.error_rate, 2)
    assert "items in refused requests" in traffic


async def test_batches_closed_by_a_failed_run_are_sent_on_resume(
    run_settings,
    sessionmaker,
    tmp_path,
    run_worker_burst,
    simulator_url,
    client,
    as_role,
):
    settings = run_settings.model_copy(update={"klaviyo_base_url": simulator_url})
    tag = uuid.uuid4().hex[:8]
    key = f"pk_resumed_{tag}_000000000000000000"
    httpx.post(f"{simulator_url}/__sim/keys", json={"add": [{"key": key}]}).raise_for_status()
    await as_role(Role.ADMIN)
    assert (await post_form(client, "/connection/key", {"private_key": key})).status_code == 200
    httpx.post(f"{simulator_url}/__sim/keys", json={"revoke": [key]}).raise_for_status()
    metric = f"Resumed {tag}"
    upload = await make_upload(sessionmaker, tmp_path, csv_text(order_rows(2_500, prefix=tag)), "events.csv")
    mapping = await make_mapping(sessionmaker, ordered_product_spec(metric))
    try:
        failed = await start_and_wait(sessionmaker, run_worker_burst, settings, upload, mapping)
        assert failed.status == RunStatus.FAILED and failed.requests == 3
        async with sessionmaker() as db:
            query = select(SyncBatch.status).where(SyncBatch.run_id == failed.id)
            assert set((await db.exec(query)).all()) == {BatchStatus.FAILED}

        # Resumed while the key is still refused: the closed batches go out again and count again.
        assert (await post_form(client, f"/runs/{failed.id}/resume")).status_code == 200
        await run_worker_burst(settings)
        async with sessionmaker() as db:
            again = await db.get(SyncRun, failed.id)
            query = select(SyncBatch.status, SyncBatch.attempts).where(SyncBatch.run_id == failed.id)
            closed = (await db.exec(query)).all()
        assert again is not None and (again.status, again.requests) == (RunStatus.FAILED, 6)
        assert sorted(closed) == [(BatchStatus.FAILED, 2)] * 3

        # The key works again: resume sends the closed batches, every event lands once.
        httpx.post(f"{simulator_url}/__sim/keys", json={"add": [{"key": key}]}).raise_for_status()
        assert (await post_form(client, f"/runs/{failed.id}/resume")).status_code == 200
        await run_worker_burst(settings)
    finally:
        await post_form(client, "/connection/sandbox")
    async with sessionmaker() as db:
        done = await db.get(SyncRun, failed.id)
        query = select(SyncBatch.status).where(SyncBatch.run_id == failed.id)
        statuses = (await db.exec(query)).all()
    assert done is not None and done.status == RunStatus.COMPLETED, done.error_message
    assert (done.items_sent, done.requests, statuses) == (2_500, 9, [BatchStatus.SENT] * 3)
    events = httpx.get(f"{simulator_url}/__sim/events", params={"metric": metric}).json()
    assert events["count"] == 2_500


async def start_and_wait(
    sessionmaker: Any, run_worker_burst: Any, settings: Any, upload: Any, mapping: Any
) -> SyncRun:
    run = await start_run(sessionmaker, settings, upload, mapping)
    await run_worker_burst(settings)
    async with sessionmaker() as db:
        done = await db.get(SyncRun, run.id)
    assert done is not None
    return done
