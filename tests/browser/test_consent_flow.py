"""Consent as a marketing-ops person runs it: a customers CSV with an accepts-marketing column, a
subscription mapping made from it with a filter, a list from the picker, a dry run, then the send;
and a schedule whose mapping needs a field the feed lacks, refused by "Test feed"."""

from __future__ import annotations

import uuid

import httpx
import pytest
from playwright.async_api import Page, expect

from models import Mapping, MappingVersion, Role
from sync.mapping import DateParse, Email, NumberCast, Target, TargetKind, column
from sync.mapping import Mapping as Spec
from tests.browser.conftest import log_in, screenshot
from tests.support.feed_server import feed_server, order
from tests.support.runs import csv_text

pytestmark = pytest.mark.browser


async def test_subscribe_only_the_customers_who_accepted_marketing(
    page: Page, user_factory, live_sessionmaker, simulator_url
):
    tag = uuid.uuid4().hex[:6]
    answers = ["yes", "no", "Y", "true", "", "1", "no", "yes"]
    rows = [
        {"Email": f"c{i}.{tag}@shop.test", "First Name": f"Customer{i}", "Accepts Marketing": answer}
        for i, answer in enumerate(answers)
    ]
    yes = sum(1 for a in answers if a.lower() in ("yes", "y", "true", "1"))
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)

    # A list to subscribe into, made on the Lists page.
    list_name = f"Marketing opt-ins {tag}"
    await page.goto("/lists/")
    await page.get_by_test_id("create-list-name").fill(list_name)
    await page.get_by_role("button", name="Create").click()
    await expect(page.get_by_test_id("created-list")).to_be_visible(timeout=20_000)
    # The table shows the new list without a reload.
    await expect(page.get_by_test_id("lists-table")).to_contain_text(list_name, timeout=10_000)
    list_id = (await page.locator(f'tr:has-text("{list_name}") code').first.inner_text()).strip()

    # The customers export.
    await page.goto("/uploads/")
    await page.set_input_files(
        "input[type=file]",
        files=[{"name": f"customers-{tag}.csv", "mimeType": "text/csv", "buffer": csv_text(rows).encode()}],
    )
    await page.get_by_role("button", name="Upload").click()
    await expect(page.get_by_test_id("upload-ready")).to_be_visible(timeout=20_000)
    upload_url = page.url

    # A subscription mapping from the sample: the suggestions are all subscription targets.
    await page.goto("/mappings/")
    await page.locator("select[name=what]").select_option("subscription")
    await page.locator("input[name=name]").fill(f"Opt-ins {tag}")
    await page.locator("summary", has_text="Sample data").click()
    option = page.locator("select[name=sample_upload] option", has_text=f"customers-{tag}.csv")
    await page.locator("select[name=sample_upload]").select_option(await option.get_attribute("value"))
    await page.get_by_role("button", name="Create and open the studio").click()
    await page.wait_for_url("**/mappings/*")
    await expect(page.get_by_test_id("save")).to_be_visible()

    # Filter: Accepts Marketing is truthy; pick the list from the picker; the preview counts skips.
    await page.locator("input[name=flt-column]").first.fill("Accepts Marketing")
    await page.locator("select[name=flt-op]").first.select_option("truthy")
    studio_picker = page.locator("#studio").get_by_test_id("list-picker-select")
    await studio_picker.select_option(list_id)
    await page.get_by_label("Sample row to preview").select_option(index=1)
    await expect(page.get_by_test_id("row-skipped")).to_contain_text("Skipped by filter", timeout=10_000)
    await screenshot(page, "consent-studio-filter")
    await page.get_by_test_id("save").click()
    await expect(page.get_by_test_id("saved")).to_contain_text("Saved as version 2")

    # Dry run from the upload, the list chosen in the run form's picker.
    await page.goto(upload_url)
    mapping_option = page.locator("select[name=mapping_id] option", has_text=f"Opt-ins {tag}")
    await page.locator("select[name=mapping_id]").select_option(await mapping_option.get_attribute("value"))
    await expect(page.get_by_test_id("backfill-option")).to_be_hidden()
    await page.get_by_test_id("profile-options").get_by_test_id("list-picker-select").select_option(list_id)
    await screenshot(page, "consent-run-form")
    await page.get_by_role("button", name="Dry run").click()
    await page.wait_for_url("**/runs/*")
    await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)
    await expect(page.get_by_test_id("items-sent")).to_have_text(str(yes))
    await expect(page.get_by_test_id("rows-skipped")).to_have_text(str(len(rows) - yes))
    await expect(page.get_by_test_id("run-skips")).to_contain_text(f"{len(rows) - yes} skipped by filter")
    await expect(page.get_by_test_id("rows-failed")).to_have_text("0")
    await screenshot(page, "consent-dry-run")

    # The send: the list's member count moves by the number of people who said yes.
    await page.goto(upload_url)
    await page.locator("select[name=mapping_id]").select_option(await mapping_option.get_attribute("value"))
    await page.get_by_test_id("profile-options").get_by_test_id("list-picker-select").select_option(list_id)
    await page.get_by_role("button", name="Send to Klaviyo").click()
    await page.get_by_test_id("confirm-send").click()  # the confirmation on the page
    await page.wait_for_url("**/runs/*")
    await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)
    await expect(page.get_by_test_id("run-list")).to_contain_text(list_name)
    await expect(page.get_by_test_id("rows-skipped")).to_have_text(str(len(rows) - yes))
    await screenshot(page, "consent-sent")
    await page.goto(f"/lists/{list_id}")
    await page.get_by_test_id(f"count-button-{list_id}").click()
    await expect(page.get_by_test_id(f"count-{list_id}")).to_have_text(str(yes), timeout=20_000)
    stored = next(
        kl for kl in httpx.get(f"{simulator_url}/__sim/lists").json()["data"] if kl["id"] == list_id
    )
    assert stored["profile_count"] == yes
    subscribed = {
        p["email"]
        for p in httpx.get(f"{simulator_url}/__sim/profiles", params={"limit": 1000}).json()["data"]
        if p["email"] and p["email"].endswith(f".{tag}@shop.test")
    }
    assert subscribed == {
        r["Email"] for r, a in zip(rows, answers, strict=True) if a.lower() in ("yes", "y", "true", "1")
    }


async def test_test_feed_refuses_a_mapping_that_needs_a_field_the_feed_lacks(
    page: Page, user_factory, live_sessionmaker
):
    tag = uuid.uuid4().hex[:6]
    spec = Spec(
        name=f"Orders needing created_at {tag}",
        target=Target(kind=TargetKind.EVENT, metric=f"Feed Order {tag}"),
        fields=[
            column("email", "email", Email()),
            column("created_at", "time", DateParse()),
            column("total", "value", NumberCast()),
        ],
    )
    async with live_sessionmaker() as db:
        mapping = Mapping(name=spec.name, target_kind=spec.target.kind.value)
        db.add(mapping)
        await db.flush()
        db.add(MappingVersion(mapping_id=mapping.id, version=1, spec=spec.model_dump(mode="json")))
        await db.commit()
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)
    with feed_server() as feed:
        feed.state.orders = [order(n, f"2026-01-0{n}T10:00:00Z", tag) for n in range(1, 4)]
        await page.goto("/schedules/new")
        await page.fill("input[name=name]", f"Orders feed {tag}")
        await page.fill("input[name=url]", f"{feed.url}/orders.json")
        await page.locator("select[name=cursor_kind]").select_option("none")
        await page.locator("select[name=mapping_id]").select_option(str(mapping.id))
        await page.get_by_test_id("test-feed").click()
        refused = page.get_by_test_id("feed-test-refused")
        await expect(refused).to_contain_text(
            "the time of each event (time) reads 'created_at'", timeout=15_000
        )
        await expect(page.get_by_test_id("feed-test-path")).to_have_text("orders")
        await expect(page.locator("#records-path")).to_have_value("orders")
        await screenshot(page, "schedule-test-feed-refused")
        await page.get_by_test_id("save-schedule").click()
        await expect(page.get_by_test_id("problem-mapping_id")).to_contain_text("which no record has")
        await expect(page.get_by_test_id("feed-test-refused")).to_be_visible()
        await screenshot(page, "schedule-save-refused")
        # Choosing to time records when received lets it through, and the schedule page says so.
        await page.get_by_test_id("use-received-time").check()
        await page.get_by_test_id("save-schedule").click()
        await page.wait_for_url("**/schedules/*")
        await expect(page.get_by_test_id("received-time")).to_contain_text(
            "timed when its record is received"
        )
        await screenshot(page, "schedule-received-time")
