"""Schedules in the browser: create a schedule on a loopback feed, run it now, follow the run."""

from __future__ import annotations

import uuid

import httpx
import pytest
from playwright.async_api import Page, expect

from models import Role
from tests.browser.conftest import log_in, screenshot
from tests.support.feed_server import feed_server, order
from tests.support.runs import make_mapping
from tests.workers.test_schedules import order_spec

pytestmark = pytest.mark.browser


async def test_operator_creates_a_schedule_runs_it_now_and_sees_the_run(
    page: Page, user_factory, live_sessionmaker, simulator_url
):
    tag, metric = uuid.uuid4().hex[:6], f"Feed Walk {uuid.uuid4().hex[:5]}"
    mapping = await make_mapping(live_sessionmaker, order_spec(metric))
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)
    with feed_server() as feed:
        feed.state.orders = [order(n, f"2026-06-0{n}T08:00:00Z", tag) for n in range(1, 6)]
        await page.goto("/schedules")
        await expect(page.get_by_test_id("ingest-link")).to_have_attribute("href", "/ingest")
        await page.get_by_test_id("new-schedule").click()

        # A cron expression that is not one gets its own message, next to the field.
        await page.fill("input[name=name]", f"Orders {tag}")
        await page.fill("input[name=url]", f"{feed.url}/orders.json")
        await page.fill("input[name=records_path]", "orders")
        await page.fill("input[name=key_field]", "order_id")
        await page.fill("input[name=cursor_field]", "updated_at")
        await page.fill("input[name=cursor_param]", "updated_since")
        await page.fill("input[name=next_page_path]", "next")
        await page.select_option("select[name=mapping_id]", label=f"{mapping.name} (event)")
        await page.select_option("select[name=timing]", "cron")
        await page.fill("input[name=cron]", "every hour")
        await page.get_by_test_id("save-schedule").click()
        await expect(page.get_by_test_id("problem-cron")).to_contain_text("Not a cron expression")
        await screenshot(page, "schedules-01-bad-cron")
        await page.fill("input[name=cron]", "0 * * * *")
        await page.get_by_test_id("save-schedule").click()
        await page.wait_for_url("**/schedules/*")
        await expect(page.get_by_test_id("upcoming").locator("li")).to_have_count(5)
        await expect(page.get_by_test_id("upcoming").locator("li").first).to_contain_text(":00:00 UTC")

        await page.get_by_test_id("run-now").click()
        await expect(page.get_by_test_id("tick-run")).to_be_visible(timeout=30_000)
        await expect(page.get_by_test_id("ticks")).to_contain_text("5 new of 5 fetched (3 pages)")
        await screenshot(page, "schedules-02-ticked")
        await page.get_by_test_id("tick-run").click()
        await page.wait_for_url("**/runs/*")
        await expect(page.locator(".kc-status.completed").first).to_be_visible(timeout=30_000)
        await screenshot(page, "schedules-03-run")

        await page.goto("/schedules")
        await expect(page.get_by_test_id("schedules-table")).to_contain_text(f"Orders {tag}")
        await expect(page.get_by_test_id("schedules-table")).to_contain_text("queued run")
        await screenshot(page, "schedules-04-list")

    events = httpx.get(f"{simulator_url}/__sim/events", params={"metric": metric}).json()["data"]
    assert sorted(e["properties"]["OrderId"] for e in events) == [f"{tag}-{n}" for n in range(1, 6)]
