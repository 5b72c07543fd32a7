"""The whole backfill flow in the browser: upload, dry run, send, watch, download the errors."""

from __future__ import annotations

import csv
import io
import uuid

import httpx
import pytest
from playwright.async_api import Page, expect

from models import Mapping, MappingVersion, Role
from tests.browser.conftest import log_in, screenshot
from tests.support.runs import csv_text, ordered_product_spec

pytestmark = pytest.mark.browser

GOOD = [
    {
        "email": f"walk{i}@shop.test",
        "order": f"W{i}",
        "sku": f"K{i % 3}",
        "price": f"{i}.25",
        "time": "2025-04-01T09:00:00Z",
    }
    for i in range(1, 2501)
]
BAD = [{"email": "broken-address", "order": "WX", "sku": "K", "price": "1", "time": "2025-04-01T09:00:00Z"}]


async def test_operator_walks_upload_dry_run_send_and_errors(
    page: Page, user_factory, live_sessionmaker, simulator_url
):
    metric = f"Walkthrough {uuid.uuid4().hex[:5]}"
    spec = ordered_product_spec(metric)
    async with live_sessionmaker() as db:
        mapping = Mapping(name=f"Ordered Product ({metric})", target_kind="event")
        db.add(mapping)
        await db.flush()
        db.add(MappingVersion(mapping_id=mapping.id, version=1, spec=spec.model_dump(mode="json")))
        await db.commit()
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)

    await page.goto("/uploads/")
    data = csv_text(GOOD[:10] + BAD + GOOD[10:]).encode()
    await page.set_input_files(
        "input[type=file]", files=[{"name": "walk.csv", "mimeType": "text/csv", "buffer": data}]
    )
    await page.get_by_role("button", name="Upload").click()
    await expect(page.get_by_test_id("upload-ready")).to_be_visible(timeout=20_000)
    upload_url = page.url
    await page.select_option("select[name=mapping_id]", label=f"Ordered Product ({metric}) (event)")

    await page.get_by_role("button", name="Dry run").click()
    await page.wait_for_url("**/runs/*")
    dry_run_url = page.url
    await expect(page.get_by_test_id("run-summary")).to_contain_text(
        "2,500 events in 3 requests would be sent", timeout=20_000
    )
    await expect(page.get_by_test_id("rows-failed")).to_have_text("1")
    await expect(page.locator("table")).to_contain_text("invalid_email")
    await screenshot(page, "run-dry-run")
    assert httpx.get(f"{simulator_url}/__sim/events", params={"metric": metric}).json()["count"] == 0

    await page.goto(upload_url)
    await page.select_option("select[name=mapping_id]", label=f"Ordered Product ({metric}) (event)")
    await page.get_by_role("button", name="Send to Klaviyo").click()
    await page.get_by_test_id("confirm-send").click()  # the confirmation on the page
    await page.wait_for_url("**/runs/*")
    send_url = page.url
    await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)
    await expect(page.get_by_test_id("run-summary")).to_contain_text("2,500 events accepted")
    await expect(page.get_by_test_id("run-progress")).to_have_attribute("value", "100.0")
    await screenshot(page, "run-sent")
    stored = httpx.get(f"{simulator_url}/__sim/events", params={"metric": metric, "limit": 5000}).json()
    assert stored["count"] == 2500
    assert all(event["backfill"] is True for event in stored["data"])

    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download error CSV").click()
    path = await (await download_info.value).path()
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    assert [(r["error_row"], r["error_column"], r["error_rule"]) for r in rows] == [
        ("11", "email", rows[0]["error_rule"])
    ]
    assert "broken-address" in rows[0]["email"]  # the row's own cell, under its own column

    await page.goto("/runs/")
    for url in (dry_run_url, send_url):
        run_id = url.rsplit("/", 1)[1]
        await expect(page.locator(f'#run-rows a[href="/runs/{run_id}"]')).to_be_visible()
    await screenshot(page, "runs-list")
