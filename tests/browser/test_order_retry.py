"""Retrying failed orders in the browser: every failed order goes again whole, and the numbers are rows."""

from __future__ import annotations

import uuid

import httpx
import pytest
from playwright.async_api import Page, expect

from models import Mapping, MappingVersion, Role
from tests.browser.conftest import log_in, screenshot
from tests.support.orders import LINES, ROWS, order_spec
from tests.support.runs import csv_text

pytestmark = pytest.mark.browser


def _stored(simulator_url: str, metric: str) -> list[dict]:
    answer = httpx.get(f"{simulator_url}/__sim/events", params={"metric": metric, "limit": 1000})
    return list(answer.json()["data"])


async def _retry(page: Page) -> str:
    before = page.url
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Retry").click()
    await page.wait_for_url(lambda url: url != before and "/runs/" in url)
    await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)
    return page.url


async def test_operator_retries_failed_orders_whole(
    page: Page, user_factory, live_sessionmaker, simulator_url
):
    tag = uuid.uuid4().hex[:5]
    placed, line = f"Placed Order {tag}", f"Ordered Product {tag}"
    async with live_sessionmaker() as db:
        mapping = Mapping(name=f"Shopify orders {tag}", target_kind="order")
        db.add(mapping)
        await db.flush()
        spec = order_spec(placed, line, fixed=False)
        db.add(MappingVersion(mapping_id=mapping.id, version=1, spec=spec.model_dump(mode="json")))
        await db.commit()
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)

    await page.goto("/uploads/")
    data = csv_text(ROWS).encode()
    await page.set_input_files(
        "input[type=file]", files=[{"name": "orders_export.csv", "mimeType": "text/csv", "buffer": data}]
    )
    await page.get_by_role("button", name="Upload").click()
    await expect(page.get_by_test_id("upload-ready")).to_be_visible(timeout=20_000)
    await page.select_option("select[name=mapping_id]", label=f"Shopify orders {tag} (order)")
    await page.get_by_role("button", name="Send to Klaviyo").click()
    await page.get_by_test_id("confirm-send").click()  # the confirmation on the page
    await page.wait_for_url("**/runs/*")
    await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)
    # Three orders fail: all 7 of their rows, not their 3 first rows.
    await expect(page.get_by_test_id("rows-failed")).to_have_text("7")
    await expect(page.get_by_role("button", name="Retry 7 failed rows")).to_be_visible()
    timing = page.locator("tr", has_text="time_out_of_range")
    await expect(timing.locator("td.num")).to_have_text(["3", "4"])  # rows, events
    await expect(timing).to_contain_text("6, 7, 8")
    await screenshot(page, "orders-failed")

    # Fix the mapping (read the contact and date columns the export fills), then retry.
    async with live_sessionmaker() as db:
        stored = await db.get(Mapping, mapping.id)
        stored.current_version = 2
        db.add(stored)
        fixed = order_spec(placed, line, fixed=True)
        db.add(MappingVersion(mapping_id=mapping.id, version=2, spec=fixed.model_dump(mode="json")))
        await db.commit()
    await _retry(page)
    await expect(page.get_by_test_id("run-summary")).to_contain_text("from 7 rows; 2 rows failed")
    await expect(page.locator("p.muted", has_text="only the failed orders")).to_be_visible()
    await screenshot(page, "orders-retried")
    orders = {e["properties"]["OrderId"]: e for e in _stored(simulator_url, placed)}
    assert sorted(orders) == ["#1001", "#1002", "#1003", "#1004"]
    lines = _stored(simulator_url, line)
    for order_id, event in orders.items():
        assert len(event["properties"]["Items"]) == LINES[order_id]
        assert len([e for e in lines if e["properties"]["OrderId"] == order_id]) == LINES[order_id]

    # #1005's price is still not a number: a second retry sends nothing.
    await _retry(page)
    await expect(page.get_by_test_id("run-summary")).to_contain_text("from 2 rows; 2 rows failed")
    await screenshot(page, "orders-retried-again")
    assert len(_stored(simulator_url, placed)) == 4 and len(_stored(simulator_url, line)) == len(lines)
