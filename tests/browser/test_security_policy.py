"""Every page under the strict Content-Security-Policy: the header is there, and the browser reports
no violation (no inline script, style or handler left, nothing htmx or uPlot adds at run time)."""

from __future__ import annotations

import os
import uuid

import pytest
from playwright.async_api import Page, expect

from config.settings import Settings
from models import Role
from services import schedules
from tests.browser.conftest import log_in, screenshot
from tests.support.env import ARTIFACTS, REDIS_URL
from tests.support.ingest import event_spec, make_source
from tests.support.runs import (
    csv_text,
    make_mapping,
    make_upload,
    order_rows,
    ordered_product_spec,
    start_run,
)

pytestmark = pytest.mark.browser

LISTEN = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${where}`);
});
"""


async def _visit(page: Page, url: str, status: int = 200) -> list[str]:
    response = await page.goto(url)
    assert response is not None and response.status == status, url
    policy = await response.header_value("content-security-policy")
    assert policy and "script-src 'self'" in policy and "style-src 'self'" in policy, url
    await page.wait_for_load_state("networkidle")
    await page.wait_for_timeout(600)  # htmx polls and partial loads settle
    return [f"{url}: {v}" for v in await page.evaluate("window.__csp")]


async def test_no_page_reports_a_policy_violation(page: Page, user_factory, live_sessionmaker, live_env):
    settings = Settings(
        database_url=live_env["DATABASE_URL"], redis_url=REDIS_URL, queue_name=live_env["QUEUE_NAME"]
    )
    tag = uuid.uuid4().hex[:6]
    mapping = await make_mapping(live_sessionmaker, ordered_product_spec(f"CSP {tag}"))
    upload = await make_upload(live_sessionmaker, ARTIFACTS / "uploads", csv_text(order_rows(3, tag)))
    run = await start_run(live_sessionmaker, settings, upload, mapping, dry_run=True)
    source, _, _, _ = await make_source(live_sessionmaker, settings, event_spec(f"CSP ingest {tag}"))
    form = schedules.ScheduleForm.from_form(
        {
            "name": f"CSP feed {tag}",
            "mapping_id": str(mapping.id),
            "url": "http://127.0.0.1:9/orders.json",
            "timing": "interval",
            "interval_minutes": "60",
        }
    )
    async with live_sessionmaker() as db:
        schedule = await schedules.create_schedule(db, settings, form, None)
        await db.commit()
    assert os.environ.get("OUTBOUND_ALLOW")  # the loopback feed above is allowed in tests

    await page.context.add_init_script(LISTEN)
    found = await _visit(page, "/login")
    admin = await user_factory(Role.ADMIN)
    await log_in(page, admin.username)
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    pages = [
        "/",
        "/connection",
        "/mappings/",
        f"/mappings/{mapping.id}",
        "/uploads/",
        f"/uploads/{upload.id}",
        "/runs/",
        f"/runs/{run.id}",
        "/lists/",
        "/schedules/",
        "/schedules/new",
        f"/schedules/{schedule.id}",
        f"/schedules/{schedule.id}/edit",
        f"/schedules/{schedule.id}/delete",
        "/ingest",
        f"/ingest/{source.id}",
        "/users/",
        "/audit/",
        "/notifications/",
    ]
    shown = {
        "/users/": "users-sessions",
        "/schedules/new": "schedule-new-outbound",
        "/notifications/": "notifications-outbound",
    }
    for url in pages:
        found += await _visit(page, url)
        if url in shown:
            await screenshot(page, shown[url])
    found += await _visit(page, "/no-such-page", 404)
    # Behaviour moved out of inline handlers still works: a new user's form empties after it is added.
    await _visit(page, "/users/")
    await page.fill("input[name=username]", f"csp{tag}")
    await page.fill("input[name=password]", "a long enough password")
    await page.get_by_role("button", name="Add user").click()
    await expect(page.get_by_role("cell", name=f"csp{tag}")).to_be_visible()
    await expect(page.locator("input[name=username]")).to_have_value("")
    # And the confirm on a destructive button asks first (dismissed: nothing happens).
    await _visit(page, f"/ingest/{source.id}")
    page.once("dialog", lambda dialog: dialog.dismiss())
    await page.get_by_test_id("rotate").click()
    await expect(page.get_by_test_id("new-token")).to_have_count(0)
    await screenshot(page, "csp-ingest-detail")
    found += await page.evaluate("window.__csp")
    assert found == []
    # The listener does hear violations: markup with a style attribute, added as htmx adds HTML.
    await page.evaluate("""document.body.insertAdjacentHTML("beforeend", '<p style="color:red">x</p>')""")
    await page.wait_for_timeout(300)
    heard = await page.evaluate("window.__csp")
    assert heard and "style-src" in heard[0]
