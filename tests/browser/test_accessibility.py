"""Every page, with realistic data, under axe-core (the npm package pinned in package.json): no
serious or critical violation; plus the keyboard basics axe cannot judge (skip link, focus ring,
no sideways scroll at 1024 px, every page in the navigation)."""

from __future__ import annotations

import json
import uuid

import pytest
from playwright.async_api import Page, expect

from config.settings import Settings
from models import Role
from services import audit, schedules
from tests.browser.conftest import log_in, screenshot
from tests.support.env import ARTIFACTS, REDIS_URL, ROOT
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

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
# Beyond every serious or critical finding, the moderate and minor rules a screen-reader user feels
# on every page: headings that skip a level, unnamed columns, twin landmarks, no page title heading.
ALSO = ["heading-order", "empty-table-header", "landmark-unique", "page-has-heading-one"]


async def _axe(page: Page, url: str, *, go: bool = True) -> list[str]:
    if go:
        response = await page.goto(url)
        assert response is not None and response.status in (200, 404), url
    await page.wait_for_load_state("networkidle")
    await page.wait_for_timeout(500)  # htmx partials settle
    # Evaluated through the DevTools protocol, which the page's Content-Security-Policy does not
    # govern: the app's policy stays as strict as in production.
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE.read_text())
    result = await page.evaluate(
        """async (also) => {
          const r = await axe.run(document, {resultTypes: ["violations"]});
          return r.violations
            .filter(v => v.impact === "serious" || v.impact === "critical" || also.includes(v.id))
            .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.slice(0, 3).map(
              n => n.target.join(" ") + " :: " + ((n.any[0] && n.any[0].message) || "").slice(0, 160))}));
        }""",
        ALSO,
    )
    return [f"{url}: {v['impact']} {v['id']} at {json.dumps(v['nodes'])}" for v in result]


async def _fixtures(live_sessionmaker, live_env) -> dict[str, str]:
    settings = Settings(
        database_url=live_env["DATABASE_URL"], redis_url=REDIS_URL, queue_name=live_env["QUEUE_NAME"]
    )
    tag = uuid.uuid4().hex[:6]
    mapping = await make_mapping(live_sessionmaker, ordered_product_spec(f"A11y {tag}"))
    upload = await make_upload(live_sessionmaker, ARTIFACTS / "uploads", csv_text(order_rows(4, tag)))
    run = await start_run(live_sessionmaker, settings, upload, mapping, dry_run=True)
    source, _, _, _ = await make_source(live_sessionmaker, settings, event_spec(f"A11y ingest {tag}"))
    form = schedules.ScheduleForm.from_form(
        {
            "name": f"A11y feed {tag}",
            "mapping_id": str(mapping.id),
            "url": "http://127.0.0.1:9/orders.json",
            "timing": "interval",
            "interval_minutes": "60",
        }
    )
    async with live_sessionmaker() as db:
        schedule = await schedules.create_schedule(db, settings, form, None)
        # An audit row as wide as real ones get: a long target and a detail with unbroken values.
        audit.record(
            db,
            None,
            "mapping.saved",
            target=f"mapping:{mapping.id}:" + "ordered-product-export-2026" * 4,
            url="https://shop.example.com/exports/orders/" + "a" * 120 + ".csv",
            fields="OrderId,ProductID,SKU,ProductName,Quantity,ItemPrice,RowTotal,ProductURL,ImageURL",
        )
        await db.commit()
    return {
        "mapping": str(mapping.id),
        "upload": str(upload.id),
        "run": str(run.id),
        "source": str(source.id),
        "schedule": str(schedule.id),
    }


async def test_every_page_passes_axe(page: Page, user_factory, live_sessionmaker, live_env):
    assert AXE.exists(), "node_modules/axe-core is missing: `make node` installs it"
    ids = await _fixtures(live_sessionmaker, live_env)
    found = await _axe(page, "/login")
    admin = await user_factory(Role.ADMIN)
    await log_in(page, admin.username)
    await expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
    pages = [
        "/",
        "/connection",
        "/mappings/",
        f"/mappings/{ids['mapping']}",
        "/uploads/",
        f"/uploads/{ids['upload']}",
        "/runs/",
        f"/runs/{ids['run']}",
        "/lists/",
        "/schedules/",
        "/schedules/new",
        f"/schedules/{ids['schedule']}",
        f"/schedules/{ids['schedule']}/edit",
        f"/schedules/{ids['schedule']}/delete",
        "/onsite/",
        "/consent",
        "/ingest",
        f"/ingest/{ids['source']}",
        "/users/",
        "/audit/",
        "/notifications/",
        "/no-such-page",
    ]
    for url in pages:
        found += await _axe(page, url)
    # The send confirmation, swapped into the upload page.
    await page.goto(f"/uploads/{ids['upload']}")
    await page.get_by_role("button", name="Send to Klaviyo").click()
    await expect(page.get_by_test_id("send-confirm")).to_be_visible()
    found += await _axe(page, f"/uploads/{ids['upload']} (send confirmation)", go=False)
    assert found == [], "\n".join(found)


async def test_keyboard_and_narrow_screen_basics(page: Page, user_factory, live_sessionmaker, live_env):
    await _fixtures(live_sessionmaker, live_env)
    admin = await user_factory(Role.ADMIN)
    await log_in(page, admin.username)
    await expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
    # Every page is in the navigation.
    nav = page.get_by_role("navigation", name="Main")
    for name in ("Real-time ingest", "Notifications", "Onsite tracking", "Consent", "Audit log"):
        await expect(nav.get_by_role("link", name=name)).to_be_visible()
    # The first Tab lands on a visible skip link that moves focus past the sidebar.
    await page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    await expect(skip).to_be_focused()
    await expect(skip).to_be_visible()
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement && document.activeElement.id") == "content"
    # A focused control shows a ring (an outline or a box shadow), not nothing.
    await page.goto("/uploads/")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    ring = await page.evaluate(
        """() => { const s = getComputedStyle(document.activeElement);
                   return {outline: s.outlineStyle + ' ' + s.outlineWidth, shadow: s.boxShadow}; }"""
    )
    assert ring["outline"].split()[0] not in ("none", "") or ring["shadow"] != "none", ring
    await screenshot(page, "a11y-focus-ring")
    # No sideways scroll at 1024 px on the widest pages.
    await page.set_viewport_size({"width": 1024, "height": 768})
    for url in ("/", "/audit/", "/runs/", "/uploads/", "/mappings/", "/ingest", "/notifications/"):
        await page.goto(url)
        await page.wait_for_load_state("networkidle")
        wide = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert wide <= 0, f"{url} scrolls sideways by {wide}px at 1024 px"
    await screenshot(page, "a11y-1024-notifications")
    await page.goto("/audit/")
    await screenshot(page, "a11y-1024-audit")
