"""Consent changes in the browser: connect a system webhook, unsubscribe someone in the sandbox,
see the change on the page (and the ways in working), and download it."""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from models import Role
from tests.browser.conftest import log_in, screenshot

pytestmark = pytest.mark.browser


async def test_unsubscribe_in_the_sandbox_shows_on_the_page_and_downloads(
    page: Page, user_factory, live_server, simulator_url
):
    tag = uuid.uuid4().hex[:6]
    email = f"gone-{tag}@shop.io"
    admin = await user_factory(Role.ADMIN)
    await log_in(page, admin.username)

    await page.get_by_role("link", name="Consent").click()
    await expect(page.get_by_role("heading", name="Consent changes")).to_be_visible()
    # Klaviyo's system webhook, created in the sandbox and pointed back at this console.
    await page.get_by_test_id("webhook-create").locator("input[name=public_url]").fill(live_server)
    await page.get_by_test_id("webhook-create").get_by_role("button").click()
    await expect(page.get_by_test_id("way-webhook")).to_contain_text("/api/klaviyo-webhooks/")

    try:
        # Someone clicks "unsubscribe" in a Klaviyo email.
        answer = httpx.post(
            f"{simulator_url}/__sim/consent-changes", json={"kind": "unsubscribe", "email": email}, timeout=10
        )
        assert answer.status_code == 200, answer.text
        await page.get_by_test_id("poll-now").click()
        row = page.get_by_test_id("consent-changes").locator("tr", has_text=email)
        for _ in range(40):
            if await row.count():
                break
            await page.wait_for_timeout(500)
            await page.goto("/consent")
        await expect(row).to_contain_text("unsubscribed")
        await expect(row).to_contain_text("email")
        await expect(page.get_by_test_id("way-webhook")).to_contain_text("received")
        await page.goto("/consent?kind=unsubscribed&channel=email")
        await expect(page.get_by_test_id("consent-changes")).to_contain_text(email)
        await screenshot(page, "consent-page")

        async with page.expect_download() as info:
            await page.get_by_test_id("consent-download").get_by_role("button").click()
        download = await info.value
        text = Path(await download.path()).read_text(encoding="utf-8")
        rows = [r for r in csv.DictReader(io.StringIO(text)) if r["email"] == email]
        assert len(rows) == 1  # once, though both the webhook and polling brought it
        assert rows[0]["kind"] == "unsubscribed" and rows[0]["channel"] == "email"
        assert download.suggested_filename.startswith("consent-changes-")
    finally:
        delete = page.get_by_test_id("way-webhook").get_by_role("button", name="Delete in Klaviyo")
        for _ in range(await delete.count()):
            await delete.first.click()
            await page.wait_for_load_state()
    await expect(page.get_by_test_id("way-webhook")).to_have_count(0)
