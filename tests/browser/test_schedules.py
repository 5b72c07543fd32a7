"""Schedules in the browser: create a schedule on a loopback feed, run it now, follow the run, edit it
(the feed position kept), delete it (its run stays), and find every action in the audit log."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from playwright.async_api import Page, expect

from models import Role
from tests.browser.conftest import log_in, screenshot
from tests.support.feed_server import feed_server, order
from tests.support.runs import make_mapping
from tests.support.specs import order_spec

pytestmark = pytest.mark.browser


async def test_operator_creates_runs_edits_and_deletes_a_schedule(
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

        # Edit: a bad cron expression gets the same message as on creation; then a new URL, position kept.
        await page.get_by_role("link", name=f"Orders {tag}").click()
        run_href = await page.get_by_test_id("tick-run").first.get_attribute("href")
        await page.get_by_test_id("edit").click()
        await expect(page.get_by_test_id("position")).to_contain_text(
            "from updated_at 2026-06-05T08:00:00Z on"
        )
        await page.fill("input[name=name]", f"Orders v2 {tag}")
        await page.fill("input[name=url]", f"{feed.url}/orders.json?version=2")
        await page.fill("input[name=cron]", "every two hours")
        await page.get_by_test_id("save-schedule").click()
        await expect(page.get_by_test_id("problem-cron")).to_contain_text("Not a cron expression")
        await expect(page.get_by_test_id("position-keep")).to_be_checked()
        await screenshot(page, "schedules-05-edit-problem")
        await page.select_option("select[name=timing]", "interval")
        await page.fill("input[name=interval_minutes]", "30")
        await page.get_by_test_id("save-schedule").click()
        await page.wait_for_url(re.compile(r"/schedules/\d+$"))
        await expect(page.locator(".kc-flash.success")).to_contain_text("Position kept")
        await expect(page.locator("header h1")).to_contain_text(f"Orders v2 {tag}")
        await expect(page.locator("header")).to_contain_text("every 30 minutes")
        # The kept position means the next tick sends nothing already sent.
        await page.get_by_test_id("run-now").click()
        await expect(page.get_by_test_id("ticks").locator("tbody tr").first).to_contain_text(
            "none new", timeout=30_000
        )
        assert feed.state.requests[-1]["query"]["version"] == "2"
        await screenshot(page, "schedules-06-edited")

        # Delete: a confirmation that says what goes and what stays; the run stays.
        await page.get_by_test_id("delete").click()
        await expect(page.get_by_test_id("delete-summary")).to_contain_text("Its run stays in run history")
        await expect(page.get_by_test_id("delete-summary").locator(f"a[href='{run_href}']")).to_be_visible()
        await screenshot(page, "schedules-07-delete-confirm")
        await page.get_by_test_id("confirm-delete").click()
        await page.wait_for_url(re.compile(r"/schedules/?$"))
        await expect(page.locator(".kc-flash.success")).to_contain_text("its runs stay in run history")
        await expect(page.get_by_role("link", name=f"Orders v2 {tag}")).to_have_count(0)
        await screenshot(page, "schedules-08-deleted")
        await page.goto(run_href)
        await expect(page.locator(".kc-status.completed").first).to_be_visible()

    # Every action is in the audit log.
    await page.goto("/audit/?action=schedule.")
    rows = page.locator("tbody tr", has_text=operator.username)
    for action in ("schedule.create", "schedule.run_now", "schedule.edit", "schedule.delete"):
        await expect(rows.filter(has_text=action).first).to_be_visible()
    await screenshot(page, "schedules-09-audit")

    events = httpx.get(f"{simulator_url}/__sim/events", params={"metric": metric}).json()["data"]
    assert sorted(e["properties"]["OrderId"] for e in events) == [f"{tag}-{n}" for n in range(1, 6)]
