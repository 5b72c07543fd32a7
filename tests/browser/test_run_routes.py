"""An upload of ecommerce-spec events in the browser, routed by event name to several metrics; the
record of an event with no route is listed unrouted, then routed and sent from the run page."""

from __future__ import annotations

import copy
import csv
import io
import json
import uuid

import httpx
import pytest
from playwright.async_api import Page, expect

from models import Mapping, MappingVersion, Role
from sync.mapping import FieldRule, MappingOptions, PathSource, Target, TargetKind
from sync.mapping import Mapping as Spec
from tests.browser.conftest import log_in, screenshot
from tests.support.ecommerce_spec import EXAMPLES, expected

pytestmark = pytest.mark.browser
EVENTS = ("Products Searched", "Product Viewed", "Product Added", "Checkout Started", "Order Completed")


def _spec_events(email: str) -> list[dict]:
    calls = []
    for event in (
        "Products Searched",
        "Product Viewed",
        "Product Added",
        "Checkout Started",
        "Order Completed",
    ):
        call = copy.deepcopy(EXAMPLES[event])
        call["context"] = {"traits": {"email": email}}
        call["userId"] = "user-" + email.partition("@")[0]
        calls.append(call)
    wish = copy.deepcopy(calls[2])
    wish.update(event="Wishlist Product Added", messageId=f"wish-{uuid.uuid4().hex[:6]}")
    return calls + [wish]


def _mine(simulator_url: str, metric: str, email: str) -> list[dict]:
    answer = httpx.get(f"{simulator_url}/__sim/events", params={"metric": metric, "limit": 10000}).json()
    return [e for e in answer["data"] if e["profile"].get("email") == email]


async def test_an_upload_of_spec_events_is_routed_to_their_metrics_and_the_unrouted_one_sent_later(
    page: Page, user_factory, live_sessionmaker, simulator_url
):
    tag = uuid.uuid4().hex[:6]
    email = f"routes-{tag}@shop.test"
    wishlist_metric = f"Added to Wishlist {tag}"
    wishlist = Spec(
        name=f"Wishlist adds {tag}",
        target=Target(kind=TargetKind.EVENT, metric=wishlist_metric),
        options=MappingOptions(backfill=False),
        fields=[
            FieldRule(source=PathSource(path="context.traits.email"), target="email"),
            FieldRule(source=PathSource(path="messageId"), target="unique_id"),
            FieldRule(source=PathSource(path="properties.name"), target="properties.ProductName"),
        ],
    )
    async with live_sessionmaker() as db:
        mapping = Mapping(name=wishlist.name, target_kind="event")
        db.add(mapping)
        await db.flush()
        db.add(MappingVersion(mapping_id=mapping.id, version=1, spec=wishlist.model_dump(mode="json")))
        await db.commit()
    operator = await user_factory(Role.OPERATOR)
    await log_in(page, operator.username)

    await page.goto("/uploads/")
    body = json.dumps(_spec_events(email), indent=2).encode()
    await page.set_input_files(
        "input[type=file]",
        files=[{"name": "spec-events.json", "mimeType": "application/json", "buffer": body}],
    )
    await page.get_by_role("button", name="Upload").click()
    await expect(page.get_by_test_id("upload-ready")).to_be_visible(timeout=20_000)
    await expect(page.get_by_test_id("upload-rows")).to_have_text("6")
    await expect(page.get_by_test_id("upload-preview")).to_contain_text("Order Completed")
    await page.select_option("select[name=mapping_id]", value="route:spec")
    await page.uncheck("input[name=backfill]")
    await screenshot(page, "routes-upload-spec-events")

    await page.get_by_role("button", name="Send to Klaviyo").click()
    await page.get_by_test_id("confirm-send").click()  # the confirmation on the page
    await page.wait_for_url("**/runs/*")
    await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)
    await expect(page.get_by_test_id("run-summary")).to_contain_text("1 skipped as unrouted")
    await expect(page.get_by_test_id("rows-failed")).to_have_text("0")
    await expect(page.get_by_test_id("unrouted")).to_contain_text("unrouted: Wishlist Product Added")
    await page.get_by_test_id("run-routes").locator("summary").click()
    await expect(page.get_by_test_id("run-routes")).to_contain_text("Ecommerce spec: Order Completed")
    await screenshot(page, "routes-run-with-unrouted")

    # Each event went to its own metric, as Klaviyo's guide prescribes; none as another event.
    for event in (
        "Products Searched",
        "Product Viewed",
        "Product Added",
        "Checkout Started",
        "Order Completed",
    ):
        for want in expected(event):
            got = [
                e
                for e in _mine(simulator_url, want["metric"], email)
                if e["properties"] == want["properties"]
            ]
            assert len(got) == 1, f"{event} -> {want['metric']}"
    assert len(_mine(simulator_url, "Added to Cart", email)) == 1
    assert _mine(simulator_url, wishlist_metric, email) == []

    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Download every failed and skipped row (CSV)").click()
    path = await (await download_info.value).path()
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    assert [(r["error_row"], r["error_severity"], r["error_message"]) for r in rows] == [
        ("6", "skipped", "unrouted: Wishlist Product Added")
    ]

    parent_url = page.url
    await page.get_by_label("Mapping for Wishlist Product Added").select_option(label=wishlist.name)
    await page.get_by_role("button", name="Route and send these records").click()
    await page.wait_for_url(lambda url: url != parent_url and "/runs/" in url)
    await expect(page.get_by_test_id("run-status")).to_have_text("completed", timeout=30_000)
    await expect(page.get_by_test_id("run-summary")).to_contain_text("1 event accepted by Klaviyo from 1 row")
    await screenshot(page, "routes-unrouted-routed-and-sent")
    await page.goto(parent_url)
    await expect(page.get_by_test_id("unrouted-runs")).to_contain_text("run #")
    sent = _mine(simulator_url, wishlist_metric, email)
    assert [e["properties"]["ProductName"] for e in sent] == [EXAMPLES["Product Added"]["properties"]["name"]]
