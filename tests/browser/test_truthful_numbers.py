"""What the pages say after a send: the run's headline counts items Klaviyo accepts but will not keep,
the Runs list names the file and mapping, the Overview's error rate counts the failed row."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from playwright.async_api import Page, expect

from models import Mapping, MappingVersion, Role
from tests.browser.conftest import log_in, screenshot
from tests.support.runs import csv_text
from tests.support.specs import profile_spec

pytestmark = pytest.mark.browser


async def test_run_page_runs_list_and_overview_tell_the_truth(
    page: Page, user_factory, live_sessionmaker, simulator_url
):
    tag = uuid.uuid4().hex[:6]
    name = f"Shop customers {tag}"
    async with live_sessionmaker() as db:
        mapping = Mapping(name=name, target_kind="profile")
        db.add(mapping)
        await db.flush()
        spec = profile_spec(name).model_dump(mode="json")
        db.add(MappingVersion(mapping_id=mapping.id, version=1, spec=spec))
        await db.commit()
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)

    people = [f"tester{n}-{tag}@example.com" for n in range(3)] + [f"ann-{tag}@shop.test", "not-an-email"]
    rows = [
        {"email": e, "phone": "", "customer_id": f"C{n}-{tag}", "first": "Ann", "title": "", "city": "Oslo",
         "tier": "gold"}
        for n, e in enumerate(people)
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
    run_id = page.url.rsplit("/", 1)[1]
    await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)
    await expect(page.get_by_test_id("run-summary")).to_contain_text("4 profiles accepted by Klaviyo")
    await expect(page.get_by_test_id("run-not-stored")).to_contain_text(
        "Accepted but Klaviyo will not store 3 profiles"
    )
    await screenshot(page, "run-not-stored")
    kept = httpx.get(f"{simulator_url}/__sim/profiles").json()["data"]
    assert [p["email"] for p in kept if tag in (p.get("email") or "")] == [f"ann-{tag}@shop.test"]

    await page.goto("/runs/")
    row = page.locator("#run-rows tr", has=page.locator(f'a[href="/runs/{run_id}"]'))
    await expect(row.get_by_test_id("run-file")).to_have_text(f"customers-{tag}.csv")
    await expect(row.get_by_test_id("run-mapping")).to_have_text(f"{name} · v1")
    await screenshot(page, "runs-list-names")

    await page.goto("/")
    await expect(page.get_by_test_id("errors-24h")).to_contain_text(re.compile(r"[1-9][\d,]* rows? failed"))
    # The worker that analysed the upload and sent the run has counted them.
    await expect(page.locator("#workers-card")).to_contain_text(re.compile(r"· [1-9][\d,]* jobs done"))
    assert await page.get_by_test_id("error-rate-24h").inner_text() != "0.00%"
    await screenshot(page, "overview-error-rate")
