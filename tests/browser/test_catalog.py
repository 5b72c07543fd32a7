"""A catalog sync in the browser: map a catalog CSV in the studio, upload and sync it, then sync a
changed file (one new, one price changed, one removed, deleting enabled) and read the counts."""

from __future__ import annotations

import uuid

import httpx
import pytest
from playwright.async_api import Page, expect

from models import Role
from services.accounts import get_account
from tests.browser.conftest import log_in, screenshot
from tests.support.runs import csv_text

pytestmark = pytest.mark.browser


def _catalog(tag: str, numbers: range) -> list[dict[str, str]]:
    return [
        {"Id": f"{tag}-{n}", "Title": f"Mug {n}", "Description": "Stoneware mug",
         "URL": f"https://shop.test/mugs/{n}", "Price": f"{12 + n % 5}.50"}
        for n in numbers
    ]  # fmt: skip


async def _upload_and_sync(page: Page, rows: list[dict[str, str]], mapping: str, *, delete: bool) -> None:
    await page.goto("/uploads/")
    await page.set_input_files(
        "input[type=file]",
        files=[{"name": "catalog.csv", "mimeType": "text/csv", "buffer": csv_text(rows).encode()}],
    )
    await page.get_by_role("button", name="Upload").click()
    await expect(page.get_by_test_id("upload-ready")).to_be_visible(timeout=20_000)
    await page.select_option("select[name=mapping_id]", label=f"{mapping} (catalog item)")
    options = page.get_by_test_id("catalog-options")
    await expect(options.get_by_label("Sync: create new entries")).to_be_checked()
    if delete:
        await options.get_by_label("Delete entries the last sync sent").check()
        await options.scroll_into_view_if_needed()
        await screenshot(page, "catalog-start-form")
    await page.get_by_role("button", name="Send to Klaviyo").click()
    await page.get_by_test_id("confirm-send").click()  # the confirmation on the page
    await page.wait_for_url("**/runs/*")
    await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)


async def test_operator_syncs_a_catalog_twice(page: Page, user_factory, live_sessionmaker, simulator_url):
    tag = uuid.uuid4().hex[:6]
    async with live_sessionmaker() as db:
        (await get_account(db)).sandbox = True  # send to the simulator, whatever key a test saved
        await db.commit()
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)

    # Map: the studio suggests targets from the catalog's headers.
    rows = _catalog(tag, range(250))
    name = f"Mugs {tag}"
    await page.goto("/mappings/")
    await page.get_by_label("What to send").select_option("catalog_item")
    await page.get_by_label("Name", exact=True).fill(name)
    await page.get_by_text("Sample data for header suggestions").click()
    await page.locator("textarea[name=sample_text]").fill(csv_text(rows[:5]))
    await page.get_by_role("button", name="Create and open the studio").click()
    await expect(page.get_by_role("heading", name=name)).to_be_visible()
    await expect(page.get_by_test_id("json")).to_contain_text('"catalog-item-bulk-create-job"')
    await expect(page.get_by_test_id("json")).to_contain_text(f'"external_id": "{tag}-0"')

    # First sync: every item is created.
    await page.set_viewport_size({"width": 1280, "height": 1000})
    await _upload_and_sync(page, rows, name, delete=False)
    outcome = page.get_by_test_id("catalog-outcome")
    await expect(outcome.get_by_test_id("catalog-created")).to_have_text("250")
    await expect(outcome.get_by_test_id("catalog-unchanged")).to_have_text("0")
    await screenshot(page, "catalog-first-sync")

    # Second sync: one new, one price changed, one gone (deleting on), the rest unchanged.
    changed = _catalog(tag, range(1, 251))
    changed[9]["Price"] = "99.00"  # item 10
    await _upload_and_sync(page, changed, name, delete=True)
    await expect(page.get_by_test_id("items-sent")).to_have_text("3")
    await expect(page.get_by_test_id("run-catalog-mode")).to_contain_text(
        "deletes entries gone from the source"
    )
    await expect(page.get_by_test_id("batches")).to_contain_text("deletes")
    outcome = page.get_by_test_id("catalog-outcome")
    for test_id, count in (("created", "1"), ("updated", "1"), ("unchanged", "248"), ("deleted", "1"),
                           ("refused", "0")):  # fmt: skip
        await expect(outcome.get_by_test_id(f"catalog-{test_id}")).to_have_text(count)
    await outcome.scroll_into_view_if_needed()
    await screenshot(page, "catalog-second-sync")

    items = httpx.get(f"{simulator_url}/__sim/catalog").json()["items"]
    mine = {i["external_id"]: i for i in items if i["external_id"].startswith(f"{tag}-")}
    assert len(mine) == 250 and f"{tag}-0" not in mine and f"{tag}-250" in mine
    assert mine[f"{tag}-10"]["price"] == 99.0
