"""Sync status in the browser: a run in progress advances on the Overview without a reload, then the
throughput chart, the run's batch timeline and its sampled requests are there to read.

Its own web process, worker and simulator: the simulator answers slowly (latency fault) and the
worker sends one batch at a time, so the run lasts long enough to watch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from arq.connections import ArqRedis
from playwright.async_api import Browser, Page, expect

from models import Role, RunStatus, SyncRun
from services import runs
from simulator.server import SimulatorProcess
from tests.browser.conftest import PASSWORD, log_in, screenshot
from tests.support.env import REDIS_URL, ROOT
from tests.support.processes import free_port, wait_for_http
from tests.support.runs import csv_text, make_mapping, make_upload, ordered_product_spec
from tests.support.web import make_user

pytestmark = pytest.mark.browser
ROWS = 40_000


@pytest.fixture(scope="module")
def slow_stack(browser_pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """uvicorn + one worker sending to a slow, time-scaled simulator."""
    upload_dir = tmp_path_factory.mktemp("status-uploads")
    queue = f"arq:status:{uuid.uuid4().hex[:6]}"
    with SimulatorProcess(time_scale=20) as sim:
        sim.configure(faults={"latency_min": 0.2, "latency_max": 0.4})
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": browser_pg_url,
            "REDIS_URL": REDIS_URL,
            "SANDBOX_URL": sim.base_url,
            "QUEUE_NAME": queue,
            "KLAVIYO_TIME_SCALE": "20",
            "SEND_CONCURRENCY": "1",
            "UPLOAD_DIR": str(upload_dir),
            "LOGIN_MAX_FAILURES": "10000",
        }
        port = free_port()
        web = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "web.app:create_app", "--factory", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stderr=subprocess.DEVNULL,
        )
        worker = subprocess.Popen(
            [sys.executable, "-m", "workers"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{url}/healthz", proc=web)
            yield {"url": url, "queue": queue, "upload_dir": str(upload_dir)}
        finally:
            for proc in (web, worker):
                proc.terminate()
            for proc in (web, worker):
                proc.wait(timeout=20)


@pytest.fixture
async def status_page(browser: Browser, slow_stack: dict[str, str]) -> AsyncIterator[Page]:
    context = await browser.new_context(base_url=slow_stack["url"], viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    yield page
    await context.close()


async def _progress(page: Page, run_id: int) -> float:
    value = await page.get_attribute(f'progress[aria-label="Run {run_id} progress"]', "value")
    return float(value or 0)


async def test_overview_progress_advances_without_reload(
    status_page: Page, slow_stack: dict[str, str], live_sessionmaker
):
    page = status_page
    rows = [
        {
            "email": f"live{i}@shop.test",
            "order": str(70_000 + i),
            "sku": "S",
            "price": "4",
            "time": "2025-05-01T00:00:00Z",
        }
        for i in range(ROWS)
    ]
    upload = await make_upload(live_sessionmaker, Path(slow_stack["upload_dir"]), csv_text(rows))
    mapping = await make_mapping(live_sessionmaker, ordered_product_spec(f"Live {uuid.uuid4().hex[:5]}"))
    admin = await make_user(live_sessionmaker, f"watch{uuid.uuid4().hex[:6]}", Role.ADMIN, PASSWORD)
    await log_in(page, admin.username)
    await page.goto("/")
    await page.evaluate("window.__sameDocument = 'yes'")  # gone if the page reloads

    async with live_sessionmaker() as db:
        run = await runs.create_run(
            db, upload_id=upload.id, mapping_id=mapping.id, dry_run=False, backfill=True, user=None
        )
        await db.commit()
    arq = ArqRedis.from_url(REDIS_URL)
    await runs.enqueue(arq, slow_stack["queue"], run, "start")
    await arq.aclose()

    bar = page.locator(f'progress[aria-label="Run {run.id} progress"]')
    await expect(bar).to_be_visible(timeout=15_000)  # the 5-second poll brings the run in
    await expect(page.get_by_test_id("headroom-events_bulk")).to_be_visible()
    first = await _progress(page, run.id)
    await page.wait_for_function(
        f"""() => {{
            const bar = document.querySelector('progress[aria-label="Run {run.id} progress"]');
            const value = bar ? parseFloat(bar.getAttribute("value")) : 0;
            return value > {first} && value < 100;
        }}""",
        timeout=30_000,
    )
    second = await _progress(page, run.id)
    assert first < second < 100
    await screenshot(page, "overview-run-in-progress")
    assert await page.evaluate("window.__sameDocument") == "yes"

    # The run finishes; the Overview lets it go, and the chart shows what was sent.
    async def finished() -> bool:
        async with live_sessionmaker() as db:
            current = await db.get(SyncRun, run.id)
            return current.status.finished

    await expect(bar).to_have_count(0, timeout=90_000)
    assert await finished()
    async with live_sessionmaker() as db:
        done = await db.get(SyncRun, run.id)
    assert done.status == RunStatus.COMPLETED and done.items_sent == ROWS
    assert await page.evaluate("window.__sameDocument") == "yes"
    await page.reload()
    await expect(page.locator("#throughput-chart canvas").first).to_be_visible()
    await expect(page.get_by_test_id("events-24h")).not_to_have_text("0")
    await screenshot(page, "overview-after-run")

    await page.goto(f"/runs/{run.id}")
    await expect(page.get_by_test_id("batches")).to_contain_text("202")
    samples = page.get_by_test_id("request-samples")
    await expect(samples.locator("tbody tr:not(.kc-sample-slot)")).to_have_count(20)
    await samples.get_by_role("button", name="Show").first.click()
    await expect(page.get_by_test_id("sample-request-body").first).to_contain_text("event-bulk-create-job")
    await expect(page.locator(".kc-request").first).to_contain_text("Klaviyo-API-Key [redacted]")
    await screenshot(page, "run-page-requests")

    # The runs list filtered (the form keeps its choices); the admin's webhook settings.
    await page.goto("/runs/")
    await page.select_option("select[name=status]", "completed")
    await page.select_option("select[name=source]", "upload")
    await page.fill("input[name=since]", "2020-01-01")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator(f'a[href="/runs/{run.id}"]')).to_be_visible()
    assert "source=upload" in page.url and "since=2020-01-01" in page.url
    await expect(page.locator("select[name=source]")).to_have_value("upload")
    await screenshot(page, "runs-filtered")
    await page.goto("/notifications/")
    await page.fill("input[name=webhook_url]", "https://hooks.example.com/klaviyo-sync")
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_test_id("saved")).to_be_visible()
    await screenshot(page, "notifications")
    await page.uncheck("input[name=enabled]")
    await page.get_by_role("button", name="Save").click()
