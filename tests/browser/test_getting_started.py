"""A brand-new console (its own empty database) walked to a first completed run using only the links
the Overview's getting-started checklist offers; screenshots of each state."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Page, expect

from models import Role
from models.db import make_engine, make_sessionmaker
from tests.browser.conftest import PASSWORD, log_in, screenshot
from tests.browser.test_mappings import SHOPIFY
from tests.support.web import make_user

pytestmark = pytest.mark.browser

# A whole Shopify orders export has these columns too (empty here); the Shopify preset reads them.
EXTRA = (
    "Source,Billing Company,Billing Address1,Billing Address2,Billing Zip,Billing Province,Billing Phone,"
    "Shipping Name,Shipping Company,Shipping Address1,Shipping Address2,Shipping City,Shipping Zip,"
    "Shipping Province,Shipping Country,Shipping Phone"
)
_lines = SHOPIFY.strip().splitlines()
ORDERS = (
    "\n".join([_lines[0] + "," + EXTRA] + [line + "," * EXTRA.count(",") + "," for line in _lines[1:]]) + "\n"
)


async def _back_to_overview(page: Page) -> None:
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Overview").click()
    await expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()


async def _follow(page: Page, step: str) -> None:
    await page.get_by_test_id(f"step-{step}").locator("a").click()


async def test_a_new_console_is_walked_to_its_first_run(
    browser: Browser, fresh_console: tuple[str, str, str]
):
    server, url, _ = fresh_console
    engine = make_engine(url)
    try:
        await make_user(make_sessionmaker(engine), "firstday", Role.ADMIN, PASSWORD)
    finally:
        await engine.dispose()
    context = await browser.new_context(base_url=server, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    try:
        await log_in(page, "firstday")
        start = page.get_by_test_id("getting-started")
        await expect(start).to_contain_text("0 of 5 done")
        await screenshot(page, "getting-started-new")

        await _follow(page, "connect")
        await page.get_by_role("button", name="Test connection").click()
        await expect(page.get_by_test_id("connection-ok")).to_be_visible(timeout=20_000)
        await _back_to_overview(page)
        await expect(page.get_by_test_id("step-connect")).to_have_class("kc-done")
        await expect(start).to_contain_text("1 of 5 done")

        await _follow(page, "upload")
        await page.set_input_files(
            "input[type=file]",
            files=[{"name": "shopify-orders.csv", "mimeType": "text/csv", "buffer": ORDERS.encode()}],
        )
        await page.get_by_role("button", name="Upload").click()
        await page.wait_for_url("**/uploads/*")
        await expect(page.get_by_test_id("upload-ready")).to_be_visible(timeout=20_000)
        await _back_to_overview(page)
        await expect(start).to_contain_text("2 of 5 done")

        # The mapping form opens with the upload as its sample.
        await _follow(page, "mapping")
        await expect(page.locator("select[name=sample_upload] option:checked")).to_contain_text(
            "shopify-orders.csv"
        )
        await page.get_by_role("button", name="Create and open the studio").click()
        await expect(page.get_by_test_id("json")).to_contain_text('"MUG-RED"')
        await _back_to_overview(page)
        await expect(start).to_contain_text("3 of 5 done")
        await screenshot(page, "getting-started-three-done")

        await _follow(page, "dry_run")
        await screenshot(page, "getting-started-dry-run-step")
        await page.get_by_role("button", name="Dry run").click()
        await page.wait_for_url("**/runs/*")
        await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)
        await expect(page.get_by_test_id("send-after-dry-run")).to_contain_text("would send")
        await _back_to_overview(page)
        await expect(start).to_contain_text("4 of 5 done")

        await _follow(page, "send")
        await page.get_by_test_id("send-now").click()
        # The confirmation is on the page: rows and the events the dry run counted.
        confirm = page.get_by_test_id("send-confirm")
        await expect(confirm).to_contain_text("Send 4 rows of shopify-orders.csv to the sandbox?")
        await expect(confirm).to_contain_text("5 events will be sent, as the dry run #1 counted")
        await expect(page.get_by_test_id("already-sent")).to_have_count(0)
        await screenshot(page, "getting-started-confirm")
        await page.get_by_test_id("confirm-send").click()
        await page.wait_for_url("**/runs/2")
        await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)
        await expect(page.locator("h1")).not_to_contain_text("dry run")
        await screenshot(page, "getting-started-sent")
        await _back_to_overview(page)
        await expect(start).to_have_count(0)
        await screenshot(page, "getting-started-done")
        # Sending the same file again says it was sent once, before anything goes.
        await page.goto("/uploads/1")
        await page.get_by_role("button", name="Send to Klaviyo").click()
        await expect(page.get_by_test_id("already-sent")).to_contain_text(
            "This file was already sent once: run #2"
        )
        await expect(page.get_by_test_id("confirm-send")).to_have_text("Send again")
        await screenshot(page, "getting-started-send-again")
        await page.get_by_test_id("cancel-send").click()
        await expect(page.get_by_test_id("send-confirm")).to_have_count(0)
    finally:
        await context.close()
