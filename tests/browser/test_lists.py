"""Lists in the browser: create a list, subscribe a CSV of profiles into it, watch the run, count,
add people by an email CSV, and meet the global-unsubscribe guard."""

from __future__ import annotations

import uuid

import httpx
import pytest
from playwright.async_api import Page, expect

from models import Mapping, MappingVersion, Role
from sync.mapping import Email, MappingOptions, Phone, Target, TargetKind, column
from sync.mapping import Mapping as Spec
from tests.browser.conftest import log_in, screenshot
from tests.support.runs import csv_text

pytestmark = pytest.mark.browser


async def test_create_list_subscribe_csv_and_count(
    page: Page, user_factory, live_sessionmaker, simulator_url
):
    tag = uuid.uuid4().hex[:6]
    spec = Spec(
        name=f"Newsletter signups {tag}",
        target=Target(kind=TargetKind.SUBSCRIPTION),
        options=MappingOptions(channels=["email", "sms"]),
        fields=[column("email", "email", Email()), column("phone", "phone_number", Phone())],
    )
    membership = Spec(
        name=f"Members by email {tag}",
        target=Target(kind=TargetKind.LIST_MEMBERSHIP),
        fields=[column("email", "email", Email())],
    )
    async with live_sessionmaker() as db:
        for made in (spec, membership):
            mapping = Mapping(name=made.name, target_kind=made.target.kind.value)
            db.add(mapping)
            await db.flush()
            db.add(MappingVersion(mapping_id=mapping.id, version=1, spec=made.model_dump(mode="json")))
        await db.commit()
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)

    # Create a list.
    await page.goto("/lists/")
    name = f"Spring newsletter {tag}"
    await page.get_by_test_id("create-list-name").fill(name)
    await page.get_by_role("button", name="Create").click()
    created = page.get_by_test_id("created-list")
    await expect(created).to_be_visible(timeout=20_000)
    await screenshot(page, "lists-created")
    await created.click()
    await expect(page.get_by_test_id("list-name")).to_have_text(name)
    list_id = page.url.rstrip("/").rsplit("/", 1)[1]

    # Upload a CSV of profiles: 6 good rows and one with an invalid phone number.
    rows = [{"email": f"spring{i}.{tag}@shop.test", "phone": f"+1202555{i:04d}"} for i in range(200, 206)]
    rows.append({"email": f"badphone.{tag}@shop.test", "phone": "555"})
    await page.goto("/uploads/")
    await page.set_input_files(
        "input[type=file]",
        files=[{"name": f"signups-{tag}.csv", "mimeType": "text/csv", "buffer": csv_text(rows).encode()}],
    )
    await page.get_by_role("button", name="Upload").click()
    await expect(page.get_by_test_id("upload-ready")).to_be_visible(timeout=20_000)

    # Subscribe it into the list from the list's page.
    await page.goto(f"/lists/{list_id}")
    form = page.get_by_test_id("run-form-list")
    await form.locator("select[name=action]").select_option("subscribe")
    upload_option = form.locator("select[name=upload_id] option", has_text=f"signups-{tag}.csv")
    await form.locator("select[name=upload_id]").select_option(await upload_option.get_attribute("value"))
    mapping_option = form.locator("select[name=mapping_id] option", has_text=spec.name)
    await form.locator("select[name=mapping_id]").select_option(await mapping_option.get_attribute("value"))
    await form.locator("input[name=custom_source]").fill("Spring popup")
    await screenshot(page, "lists-subscribe-form")
    await page.get_by_test_id("run-send-list").click()
    await page.wait_for_url("**/runs/*")
    await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)
    await expect(page.get_by_test_id("run-summary")).to_contain_text("6 profiles accepted")
    await expect(page.get_by_test_id("rows-failed")).to_have_text("1")
    await expect(page.get_by_test_id("run-list")).to_contain_text(name)
    await expect(page.locator("table").first).to_contain_text("invalid_phone")
    await screenshot(page, "lists-subscribe-run")

    # The list's member count, fetched on request.
    await page.goto(f"/lists/{list_id}")
    await page.get_by_test_id(f"count-button-{list_id}").click()
    await expect(page.get_by_test_id(f"count-{list_id}")).to_have_text("6", timeout=20_000)
    await screenshot(page, "lists-detail-counted")
    await page.goto("/lists/")
    await expect(page.get_by_test_id("lists-table")).to_contain_text(name)
    await expect(page.get_by_test_id(f"count-{list_id}")).to_have_text("6")
    await screenshot(page, "lists-index")

    # Add people by email from a CSV (no consent change): one is new to Klaviyo and is created.
    members = [{"email": f"member{i}.{tag}@shop.test"} for i in range(2)]
    members.append({"email": "not-an-address"})
    await page.goto("/uploads/")
    await page.set_input_files(
        "input[type=file]",
        files=[{"name": f"members-{tag}.csv", "mimeType": "text/csv", "buffer": csv_text(members).encode()}],
    )
    await page.get_by_role("button", name="Upload").click()
    await expect(page.get_by_test_id("upload-ready")).to_be_visible(timeout=20_000)
    await page.goto(f"/lists/{list_id}")
    await form.locator("select[name=action]").select_option("add")
    upload_option = form.locator("select[name=upload_id] option", has_text=f"members-{tag}.csv")
    await form.locator("select[name=upload_id]").select_option(await upload_option.get_attribute("value"))
    mapping_option = form.locator("select[name=mapping_id] option", has_text=membership.name)
    await form.locator("select[name=mapping_id]").select_option(await mapping_option.get_attribute("value"))
    await expect(page.get_by_test_id("membership-help")).to_contain_text("creates a profile")
    await page.get_by_test_id("run-send-list").click()
    await page.wait_for_url("**/runs/*")
    await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)
    await expect(page.get_by_test_id("run-summary")).to_contain_text("2 profiles accepted")
    await expect(page.get_by_test_id("rows-failed")).to_have_text("1")
    await expect(page.locator("table").first).to_contain_text("invalid_email")
    await screenshot(page, "lists-add-by-email-run")
    await page.goto(f"/lists/{list_id}")
    await page.get_by_test_id(f"count-button-{list_id}").click()
    await expect(page.get_by_test_id(f"count-{list_id}")).to_have_text("8", timeout=20_000)

    # Unsubscribing someone who is not in the list would be global: the page says so and asks first.
    await page.goto(f"/lists/{list_id}")
    outsider = f"outsider.{tag}@shop.test"
    await page.get_by_test_id("unsubscribe-contacts").fill(f"{rows[0]['email']}\n{outsider}")
    await page.get_by_test_id("unsubscribe-check-button").click()
    await expect(page.get_by_test_id("global-count")).to_have_text("1", timeout=20_000)
    await expect(page.get_by_test_id("unsubscribe-check")).to_contain_text("globally")
    await screenshot(page, "lists-unsubscribe-guard")
    await page.get_by_test_id("unsubscribe-members").click()
    await expect(page.get_by_test_id("op-summary")).to_contain_text("1 done", timeout=20_000)
    consent = httpx.get(f"{simulator_url}/__sim/consent").json()
    assert not [u for u in consent["global_unsubscribes"] if u["email"] == outsider]
    assert [u["email"] for u in consent["list_unsubscribes"] if u["list_id"] == list_id] == [rows[0]["email"]]

    stored = next(
        kl for kl in httpx.get(f"{simulator_url}/__sim/lists").json()["data"] if kl["id"] == list_id
    )
    assert stored["profile_count"] == 7
