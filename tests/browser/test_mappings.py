"""The mapping studio in a real browser: build a Placed Order mapping from a Shopify-style CSV, watch the
preview follow each edit, save a new version; the page at 1280 px and at 800 px."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.async_api import Page, expect

from models import Role
from tests.browser.conftest import log_in, screenshot

pytestmark = pytest.mark.browser

# Shopify's orders export: one row per line item, order columns only on an order's first line.
SHOPIFY = """Name,Email,Financial Status,Paid at,Fulfillment Status,Currency,Subtotal,Shipping,Taxes,Total,\
Discount Code,Discount Amount,Shipping Method,Created at,Lineitem quantity,Lineitem name,Lineitem price,\
Lineitem sku,Billing Name,Billing City,Billing Country,Vendor
#1001,ana@shop.test,paid,2024-03-01 10:20:00 -0500,fulfilled,USD,45.00,5.00,0.00,50.00,,0.00,Standard,\
2024-03-01 10:15:00 -0500,1,Blue Mug,15.00,MUG-BLUE,Ana Silva,Boston,US,Acme
#1001,,,,,,,,,,,,,,2,Red Mug,15.00,MUG-RED,,,,Acme
#1002,ben@shop.test,paid,,unfulfilled,USD,20.00,0.00,0.00,20.00,SPRING,2.00,Express,2024-03-02,1,Tea Towel,\
20.00,TOWEL-1,Ben Okafor,Austin,US,Linen Co
#1003,not-an-email,pending,,,USD,9.00,0,0,9.00,,0,,2024-03-03 08:00:00 -0500,1,Coaster,9.00,COAST-1,,,,Acme
"""


async def test_operator_builds_a_placed_order_mapping_from_a_shopify_sample(page: Page, user_factory):
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)
    await page.goto("/mappings/")
    await screenshot(page, "mappings-index-empty")
    await page.get_by_label("What to send").select_option("order:Placed Order")
    await page.get_by_label("Name", exact=True).fill("Shopify backfill: Placed Order")
    await page.get_by_text("Sample data for header suggestions").click()
    await page.locator("textarea[name=sample_text]").fill(SHOPIFY)
    await page.get_by_role("button", name="Create and open the studio").click()

    await expect(page.get_by_role("heading", name="Shopify backfill: Placed Order")).to_be_visible()
    preview_json = page.get_by_test_id("json")
    await expect(preview_json).to_contain_text('"event-bulk-create-job"')
    await expect(preview_json).to_contain_text('"name": "Placed Order"')
    await expect(preview_json).to_contain_text('"MUG-RED"')  # the order's second line is in Items
    await expect(page.get_by_test_id("count-items")).to_have_text(
        "5"
    )  # #1001: order + 2 lines, #1002: order + 1 line; #1003 is rejected
    await expect(page.get_by_test_id("columns")).to_contain_text("Lineitem sku")
    await screenshot(page, "mappings-studio")

    # Rename a target: the JSON follows without a reload.
    financial = page.locator("input.kc-target[value='properties.FinancialStatus']")
    await financial.fill("properties.PaymentStatus")
    await expect(preview_json).to_contain_text('"PaymentStatus": "paid"')
    await expect(preview_json).not_to_contain_text("FinancialStatus")

    # Remove a field: its property leaves the JSON.
    taxes = page.locator(".kc-rule", has=page.locator("input.kc-src[value='Taxes']"))
    await expect(preview_json).to_contain_text('"TaxTotal"')
    await taxes.get_by_role("button", name="Remove field").click()
    await expect(taxes).to_have_count(0)
    await expect(preview_json).not_to_contain_text('"TaxTotal"')

    # Add a field with a constant source: every order gets it.
    count = await page.locator(".kc-rule").count()
    await page.get_by_role("button", name="+ Add field").click()
    await expect(page.locator(".kc-rule")).to_have_count(count + 1)
    added = page.locator(".kc-rule").last
    await added.get_by_label("Source kind").select_option("constant")
    await added.get_by_label("Source", exact=True).fill("web")
    await added.get_by_label("Klaviyo target").fill("properties.Channel")
    await expect(preview_json).to_contain_text('"Channel": "web"')

    # Order #1002 has a date without a time: amber warning; the time zone option moves its time.
    await page.get_by_label("Sample row to preview").select_option(label="! row 3 · 2 items · 1 warning")
    await expect(page.get_by_test_id("row-messages")).to_contain_text("date_without_time")
    await expect(preview_json).to_contain_text('"time": "2024-03-02T00:00:00+00:00"')
    await page.locator("input[name=opt-default_timezone]").fill("America/New_York")
    await expect(preview_json).to_contain_text('"time": "2024-03-02T05:00:00+00:00"')
    await screenshot(page, "mappings-studio-warning")

    # Order #1003 has a broken email: red error, nothing sent for it.
    await page.get_by_label("Sample row to preview").select_option(index=2)
    await expect(page.get_by_test_id("row-messages")).to_contain_text("invalid_email")
    await expect(page.get_by_text("Nothing is sent for this order")).to_be_visible()
    await screenshot(page, "mappings-studio-error")

    # The account's metric names come from a worker job; then new metrics are flagged. (The order
    # metric gets a name of its own: other tests of this session may have sent Placed Order.)
    fresh_metric = f"Placed Order {uuid.uuid4().hex[:6]}"
    await page.locator("input[name=opt-order_metric]").fill(fresh_metric)
    await page.get_by_role("button", name="Refresh metrics").click()
    await expect(page.get_by_test_id("metrics")).to_contain_text(
        re.compile(r"Account metrics: \d+ of 200"), timeout=45_000
    )
    await expect(page.get_by_test_id("mapping-issues")).to_contain_text(
        f"{fresh_metric} is not a metric in the Klaviyo account yet"
    )

    await page.get_by_test_id("save").click()
    await expect(page.get_by_test_id("saved")).to_contain_text("Saved as version 2")
    await expect(page.locator("#version-badge")).to_have_text("version 2")
    await screenshot(page, "mappings-studio-saved")

    await page.reload()
    await expect(page.locator("input.kc-target[value='properties.PaymentStatus']")).to_have_count(1)
    await expect(page.locator("input[name=opt-default_timezone]")).to_have_value("America/New_York")
    await expect(page.get_by_test_id("json")).to_contain_text('"PaymentStatus"')  # the sample is remembered

    await page.set_viewport_size({"width": 800, "height": 900})
    await screenshot(page, "mappings-studio-800")
    await page.goto("/mappings/")
    await expect(page.get_by_test_id("mappings-table")).to_contain_text("Shopify backfill: Placed Order")
    await screenshot(page, "mappings-index-800")
    await page.set_viewport_size({"width": 1280, "height": 800})
    await screenshot(page, "mappings-index")


async def test_viewer_sees_the_studio_read_only(page: Page, user_factory):
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)
    await page.goto("/mappings/")
    await page.get_by_label("What to send").select_option("profile")
    await page.get_by_role("button", name="Create and open the studio").click()
    await expect(page.get_by_test_id("save")).to_be_visible()
    url = page.url
    viewer = await user_factory(Role.VIEWER)
    await page.context.clear_cookies()
    await log_in(page, viewer.username)
    await page.goto(url)
    await expect(page.get_by_text("saving needs the operator role")).to_be_visible()
    await expect(page.get_by_test_id("save")).to_have_count(0)
    await screenshot(page, "mappings-studio-viewer")


ECOMMERCE_JSON = """[
  {"event": "Product Added", "messageId": "msg-1", "timestamp": "2024-05-01T10:00:00Z",
   "context": {"traits": {"email": "ana@shop.test", "phone": "+14155550100"}},
   "properties": {"product_id": "P1", "sku": "MUG-BLUE", "name": "Blue Mug", "price": 15, "quantity": 2,
                  "value": 30, "categories": "Kitchen, Mugs",
                  "products": [{"product_id": "P1", "sku": "MUG-BLUE", "name": "Blue Mug", "price": 15,
                                "quantity": 2}]}}
]"""


async def test_json_track_calls_map_by_path(page: Page, user_factory):
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)
    await page.goto("/mappings/")
    await page.get_by_label("What to send").select_option("event:Added to Cart")
    await page.locator("select[name=source]").select_option("ecommerce_spec")
    await page.get_by_text("Sample data for header suggestions").click()
    await page.locator("textarea[name=sample_text]").fill(ECOMMERCE_JSON)
    await page.get_by_role("button", name="Create and open the studio").click()
    await expect(page.get_by_test_id("columns")).to_contain_text("context.traits.email")
    preview_json = page.get_by_test_id("json")
    await expect(preview_json).to_contain_text('"AddedItemProductName": "Blue Mug"')
    await expect(preview_json).to_contain_text('"phone_number": "+14155550100"')
    await screenshot(page, "mappings-studio-json")
