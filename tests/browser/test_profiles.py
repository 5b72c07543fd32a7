"""A profile import in the browser: upload a profiles CSV, choose a list, send, watch it complete."""

from __future__ import annotations

import uuid

import httpx
import pytest
from playwright.async_api import Page, expect

from klaviyo.client import KlaviyoClient
from models import Mapping, MappingVersion, Role
from services.accounts import get_account
from simulator.config import SANDBOX_KEY
from sync.mapping import Mapping as Spec
from sync.mapping import Target, TargetKind, column
from tests.browser.conftest import log_in, screenshot
from tests.support.runs import csv_text

pytestmark = pytest.mark.browser


async def test_operator_imports_profiles_into_a_list(
    page: Page, user_factory, live_sessionmaker, simulator_url
):
    tag = uuid.uuid4().hex[:6]
    rows = [
        {"Email": f"walker{i}-{tag}@shop.test", "First name": f"W{i}", "City": "Lyon", "Tier": "silver"}
        for i in range(1, 1201)
    ]
    rows.insert(7, {"Email": "no-at-sign", "First name": "Bad", "City": "", "Tier": ""})
    spec = Spec(
        name=f"Customers {tag}",
        target=Target(kind=TargetKind.PROFILE),
        fields=[
            column("Email", "email"),
            column("First name", "first_name"),
            column("City", "location.city"),
            column("Tier", "properties.Tier"),
        ],
    )
    async with live_sessionmaker() as db:
        (await get_account(db)).sandbox = True  # send to the simulator, whatever key a test saved
        mapping = Mapping(name=spec.name, target_kind="profile")
        db.add(mapping)
        await db.flush()
        db.add(MappingVersion(mapping_id=mapping.id, version=1, spec=spec.model_dump(mode="json")))
        await db.commit()
    async with KlaviyoClient(SANDBOX_KEY, base_url=simulator_url) as klaviyo:
        list_id = await klaviyo.create_list(f"Newsletter {tag}")

    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)
    # The list was made in Klaviyo: a sync brings it into the console's list picker.
    await page.goto("/lists/")
    await page.get_by_role("button", name="Sync lists").click()
    await expect(page.get_by_test_id("lists-synced")).to_be_visible(timeout=20_000)
    await page.goto("/uploads/")
    await page.set_input_files(
        "input[type=file]",
        files=[{"name": "customers.csv", "mimeType": "text/csv", "buffer": csv_text(rows).encode()}],
    )
    await page.get_by_role("button", name="Upload").click()
    await expect(page.get_by_test_id("upload-ready")).to_be_visible(timeout=20_000)
    await page.select_option("select[name=mapping_id]", label=f"Customers {tag} (profile)")
    options = page.get_by_test_id("profile-options")
    await expect(options).to_contain_text("an empty cell leaves that field unchanged")
    await options.get_by_test_id("list-picker-select").select_option(list_id)
    await options.scroll_into_view_if_needed()
    await screenshot(page, "profiles-start")

    await page.get_by_role("button", name="Send to Klaviyo").click()
    await page.get_by_test_id("confirm-send").click()  # the confirmation on the page
    await page.wait_for_url("**/runs/*")
    await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)
    await expect(page.get_by_test_id("run-summary")).to_contain_text(
        "1,200 profiles accepted by Klaviyo from 1,201 rows; 1 row failed"
    )
    await expect(page.get_by_test_id("run-list")).to_contain_text(f"Newsletter {tag}")  # synced: by name
    await expect(page.locator("table").first).to_contain_text("invalid_email")
    await screenshot(page, "profiles-sent")

    lists = httpx.get(f"{simulator_url}/__sim/lists").json()["data"]
    (newsletter,) = [k for k in lists if k["id"] == list_id]
    assert newsletter["profile_count"] == 1200
    stored = httpx.get(f"{simulator_url}/__sim/profiles", params={"email": f"walker9-{tag}@shop.test"}).json()
    assert stored["data"][0]["first_name"] == "W9" and stored["data"][0]["properties"] == {"Tier": "silver"}


async def test_refusals_klaviyo_does_not_attribute_are_shown_on_the_run(
    page: Page, user_factory, live_sessionmaker, simulator_url
):
    # Klaviyo's job counts 2 failures but lists none: the run page says so and does not count them.
    tag = uuid.uuid4().hex[:6]
    async with KlaviyoClient(SANDBOX_KEY, base_url=simulator_url) as klaviyo:
        for n in (2, 4):
            await klaviyo.import_profile({"email": f"owner{n}-{tag}@shop.test", "external_id": f"X{n}-{tag}"})
            await klaviyo.import_profile({"email": f"h{n}-{tag}@shop.test"})
    rows = [
        {"Email": f"h{n}-{tag}@shop.test", "Id": f"X{n}-{tag}" if n in (2, 4) else f"C{n}-{tag}"}
        for n in range(1, 6)
    ]
    spec = Spec(
        name=f"Hidden {tag}",
        target=Target(kind=TargetKind.PROFILE),
        fields=[column("Email", "email"), column("Id", "external_id")],
    )
    async with live_sessionmaker() as db:
        (await get_account(db)).sandbox = True
        mapping = Mapping(name=spec.name, target_kind="profile")
        db.add(mapping)
        await db.flush()
        db.add(MappingVersion(mapping_id=mapping.id, version=1, spec=spec.model_dump(mode="json")))
        await db.commit()
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)
    await page.goto("/uploads/")
    await page.set_input_files(
        "input[type=file]",
        files=[{"name": "hidden.csv", "mimeType": "text/csv", "buffer": csv_text(rows).encode()}],
    )
    await page.get_by_role("button", name="Upload").click()
    await expect(page.get_by_test_id("upload-ready")).to_be_visible(timeout=20_000)
    await page.select_option("select[name=mapping_id]", label=f"Hidden {tag} (profile)")
    httpx.post(f"{simulator_url}/__sim/config", json={"faults": {"job_errors_hidden_share": 1.0}})
    try:
        await page.get_by_role("button", name="Send to Klaviyo").click()
        await page.get_by_test_id("confirm-send").click()  # the confirmation on the page
        await page.wait_for_url("**/runs/*")
        await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)
    finally:
        httpx.post(f"{simulator_url}/__sim/config", json={"faults": {"job_errors_hidden_share": 0.0}})
    await expect(page.get_by_test_id("run-row-unknown")).to_contain_text(
        "Refused by Klaviyo, row unknown: 2 profiles"
    )
    await expect(page.get_by_test_id("run-summary")).to_contain_text("3 profiles accepted by Klaviyo")
    await expect(page.locator("table").first).to_contain_text("refused_row_unknown")
    await screenshot(page, "profiles-row-unknown")
