"""Proof of landing in the browser: a completed backfill is checked against Klaviyo with one click,
the day-by-day table says what Klaviyo holds, and the Runs list shows the verified badge."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from playwright.async_api import Page, expect

from klaviyo.client import KlaviyoClient
from models import Mapping, MappingVersion, Role
from simulator.config import SANDBOX_KEY
from tests.browser.conftest import log_in, screenshot
from tests.support.runs import csv_text, ordered_product_spec
from tests.workers.test_profile_runs import profile_spec

pytestmark = pytest.mark.browser


async def test_a_completed_backfill_is_verified_in_klaviyo(page: Page, user_factory, live_sessionmaker):
    tag = uuid.uuid4().hex[:6]
    name = f"Backfill orders {tag}"
    metric = f"Ordered Product {tag}"
    async with live_sessionmaker() as db:
        mapping = Mapping(name=name, target_kind="event")
        db.add(mapping)
        await db.flush()
        spec = ordered_product_spec(metric).model_copy(update={"name": name}).model_dump(mode="json")
        db.add(MappingVersion(mapping_id=mapping.id, version=1, spec=spec))
        await db.commit()
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)

    days = ["2025-02-01", "2025-02-02", "2025-02-04"]
    rows = [
        {"email": f"b{n}-{tag}@shop.test", "order": f"{tag}-{n}", "sku": "MUG", "price": str(10 + n % 3),
         "time": f"{days[n % 3]}T12:00:00Z"}
        for n in range(9)
    ]  # fmt: skip
    await page.goto("/uploads/")
    await page.set_input_files(
        "input[type=file]",
        files=[{"name": f"orders-{tag}.csv", "mimeType": "text/csv", "buffer": csv_text(rows).encode()}],
    )
    await page.get_by_role("button", name="Upload").click()
    await expect(page.get_by_test_id("upload-ready")).to_be_visible(timeout=20_000)
    await page.select_option("select[name=mapping_id]", label=f"{name} (event)")
    await page.get_by_role("button", name="Send to Klaviyo").click()
    await page.get_by_test_id("confirm-send").click()  # the confirmation on the page
    await page.wait_for_url("**/runs/*")
    run_id = page.url.rsplit("/", 1)[1]
    await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)
    await expect(page.get_by_test_id("verification-none")).to_contain_text("checked automatically")

    # Klaviyo needs a moment to process the bulk jobs (the simulator: 20 s, time-scaled to 1 s).
    await asyncio.sleep(1.5)
    await page.get_by_test_id("verify-button").click()
    await expect(page.get_by_test_id("verification-state")).to_have_text("verified", timeout=20_000)
    await expect(page.get_by_test_id("verification-message")).to_contain_text("at least the 9 events")
    table = page.get_by_test_id("verification-days")
    await expect(table.get_by_test_id("verification-day")).to_have_count(3)
    for day in days:
        cells = table.locator(f'tr[data-day="{day}"] td')
        await expect(cells.nth(2)).to_have_text("3")
        await expect(cells.nth(3)).to_have_text("3")
        await expect(cells.nth(4)).to_have_text("0")
    await expect(page.get_by_test_id("verification-when")).to_contain_text("may need some minutes")
    await expect(page.get_by_test_id("verify-button")).to_have_text("Re-check")
    await page.get_by_test_id("verification").scroll_into_view_if_needed()
    await screenshot(page, "run-verified")

    await page.goto("/runs/")
    row = page.locator("#run-rows tr", has=page.locator(f'a[href="/runs/{run_id}"]'))
    await expect(row.get_by_test_id("run-verified")).to_have_text("verified")
    await screenshot(page, "runs-list-verified")


async def test_events_lost_in_klaviyo_are_flagged_on_their_day(
    page: Page, user_factory, live_sessionmaker, simulator_url
):
    tag = uuid.uuid4().hex[:6]
    name = f"Lossy orders {tag}"
    async with live_sessionmaker() as db:
        mapping = Mapping(name=name, target_kind="event")
        db.add(mapping)
        await db.flush()
        spec = ordered_product_spec(f"Lossy {tag}").model_copy(update={"name": name}).model_dump(mode="json")
        db.add(MappingVersion(mapping_id=mapping.id, version=1, spec=spec))
        await db.commit()
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)
    rows = [
        {"email": f"l{n}-{tag}@shop.test", "order": f"{tag}-{n}", "sku": "MUG", "price": "4",
         "time": f"2025-02-0{1 + n % 2}T12:00:00Z"}
        for n in range(6)
    ]  # fmt: skip
    # Klaviyo loses every event of 2 February (a fault of the session's simulator, undone after).
    lose = {"faults": {"drop_events_share": 1.0, "drop_events_days": ["2025-02-02"]}}
    httpx.post(f"{simulator_url}/__sim/config", json=lose).raise_for_status()
    try:
        await page.goto("/uploads/")
        await page.set_input_files(
            "input[type=file]",
            files=[{"name": f"lossy-{tag}.csv", "mimeType": "text/csv", "buffer": csv_text(rows).encode()}],
        )
        await page.get_by_role("button", name="Upload").click()
        await expect(page.get_by_test_id("upload-ready")).to_be_visible(timeout=20_000)
        await page.select_option("select[name=mapping_id]", label=f"{name} (event)")
        await page.get_by_role("button", name="Send to Klaviyo").click()
        await page.get_by_test_id("confirm-send").click()  # the confirmation on the page
        await page.wait_for_url("**/runs/*")
        await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)
    finally:
        httpx.post(
            f"{simulator_url}/__sim/config",
            json={"faults": {"drop_events_share": 0.0, "drop_events_days": []}},
        ).raise_for_status()
    await asyncio.sleep(1.5)
    await page.get_by_test_id("verify-button").click()
    # Minutes after the run a shortfall may be Klaviyo still processing: not yet called a mismatch.
    await expect(page.get_by_test_id("verification-state")).to_have_text("not yet complete", timeout=20_000)
    await expect(page.get_by_test_id("verification-message")).to_contain_text("3 fewer events")
    table = page.get_by_test_id("verification-days")
    await expect(table.locator('tr[data-short="yes"]')).to_have_count(1)
    short = table.locator('tr[data-day="2025-02-02"] td')
    await expect(short.nth(3)).to_have_text("0")
    await expect(short.nth(4)).to_have_text("-3")
    await expect(table.locator('tr[data-day="2025-02-01"]')).to_have_attribute("data-short", "no")
    await page.get_by_test_id("verification").scroll_into_view_if_needed()
    await screenshot(page, "run-verification-short")


async def test_a_profile_changed_in_klaviyo_shows_in_the_sample(
    page: Page, user_factory, live_sessionmaker, simulator_url
):
    tag = uuid.uuid4().hex[:6]
    name = f"Customers {tag}"
    async with live_sessionmaker() as db:
        mapping = Mapping(name=name, target_kind="profile")
        db.add(mapping)
        await db.flush()
        db.add(
            MappingVersion(mapping_id=mapping.id, version=1, spec=profile_spec(name).model_dump(mode="json"))
        )
        await db.commit()
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)
    rows = [
        {"email": f"c{n}-{tag}@shop.test", "phone": "", "customer_id": f"C{n}-{tag}", "first": f"Ann{n}",
         "title": "", "city": "Oslo", "tier": "gold"}
        for n in range(4)
    ]  # fmt: skip
    await page.goto("/uploads/")
    await page.set_input_files(
        "input[type=file]",
        files=[{"name": f"customers-{tag}.csv", "mimeType": "text/csv", "buffer": csv_text(rows).encode()}],
    )
    await page.get_by_role("button", name="Upload").click()
    await expect(page.get_by_test_id("upload-ready")).to_be_visible(timeout=20_000)
    await page.select_option("select[name=mapping_id]", label=f"{name} (profile)")
    await page.get_by_role("button", name="Send to Klaviyo").click()
    await page.get_by_test_id("confirm-send").click()  # the confirmation on the page
    await page.wait_for_url("**/runs/*")
    await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)

    # Someone edits one profile in Klaviyo after the run.
    async with KlaviyoClient(SANDBOX_KEY, base_url=simulator_url) as klaviyo:
        ids = await klaviyo.find_profile_ids("email", [f"c2-{tag}@shop.test"])
        await klaviyo.update_profile(ids[f"c2-{tag}@shop.test"], {"location": {"city": "Bergen"}})
    await page.get_by_test_id("verify-button").click()
    await expect(page.get_by_test_id("verification-sample")).to_contain_text(
        "3 of 4 match; 1 differ.", timeout=20_000
    )
    differences = page.get_by_test_id("verification-differences")
    await expect(differences.locator("tbody tr")).to_have_count(1)
    await expect(differences.locator("tbody tr td")).to_have_text(
        ["3", f"c2-{tag}@shop.test", "location.city", "Oslo", "Bergen"]
    )
    await page.get_by_test_id("verification").scroll_into_view_if_needed()
    await screenshot(page, "run-verification-profiles")
