"""Real-time ingest in the browser: create a signed source (token and secret shown once), post
events to it as a store would, watch them go out (and wait through Klaviyo errors), then revoke."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest
from playwright.async_api import Page, expect

from models import Mapping, MappingVersion, Role
from services.ingest import sign
from tests.browser.conftest import log_in, screenshot
from tests.support.ingest import event_record, event_spec

pytestmark = pytest.mark.browser


def sim_count(simulator_url: str, metric: str) -> int:
    answer = httpx.get(f"{simulator_url}/__sim/events", params={"metric": metric, "limit": "0"})
    return int(answer.json()["count"])


async def test_create_post_watch_and_revoke(
    page: Page, user_factory, live_sessionmaker, live_server, simulator_url
):
    tag = uuid.uuid4().hex[:6]
    metric = f"Checkout {tag}"
    spec = event_spec(metric)
    async with live_sessionmaker() as db:
        mapping = Mapping(name=spec.name, target_kind=spec.target.kind.value)
        db.add(mapping)
        await db.flush()
        db.add(MappingVersion(mapping_id=mapping.id, version=1, spec=spec.model_dump(mode="json")))
        await db.commit()
    admin = await user_factory(Role.ADMIN)
    await log_in(page, admin.username)

    # From Schedules to the ingest sources, and a new source that signs its requests.
    await page.goto("/ingest")
    await expect(page.get_by_role("heading", name="Real-time ingest")).to_be_visible()
    await page.get_by_test_id("ingest-name").fill(f"Storefront {tag}")
    await page.get_by_test_id("ingest-mapping").select_option(label=f"{spec.name} (event)")
    await page.get_by_test_id("ingest-signed").check()
    await screenshot(page, "ingest-new-source")
    await page.get_by_test_id("ingest-create").click()
    shown = page.get_by_test_id("shown-once")
    await expect(shown).to_contain_text("not shown again")
    token = await page.get_by_test_id("new-token").input_value()
    secret = await page.get_by_test_id("new-secret").input_value()
    assert token.startswith("kci_") and secret.startswith("whsec_")
    await screenshot(page, "ingest-created")
    endpoint = (await page.get_by_test_id("endpoint").inner_text()).split()[1]
    assert endpoint.startswith(live_server) and "/api/ingest/" in endpoint
    source_id = int(endpoint.rsplit("/", 1)[1])

    # The store posts three orders and one record the mapping refuses, signed.
    body = orjson.dumps([*(event_record(n, prefix=tag) for n in range(3)), {"id": "x", "email": "nope"}])
    headers = {"authorization": f"Bearer {token}", "x-signature": sign(secret, body)}
    answer = httpx.post(endpoint, content=body, headers=headers)
    assert answer.status_code == 202 and answer.json()["accepted"] == 3 and answer.json()["rejected"] == 1

    # The page shows them going out; the refused record is listed with its reason.
    await page.goto(f"/ingest/{source_id}")
    await expect(page.get_by_test_id("sent-count")).to_have_text("3", timeout=20_000)
    await expect(page.get_by_test_id("failed-records")).to_contain_text("email")
    assert await page.get_by_test_id("new-token").count() == 0  # the token is not shown again
    assert sim_count(simulator_url, metric) == 3
    await screenshot(page, "ingest-source")

    # Klaviyo failing: the records wait, listed with the error, and go out once it recovers.
    httpx.post(f"{simulator_url}/__sim/config", json={"faults": {"error_share": 1.0}}).raise_for_status()
    try:
        body = orjson.dumps([event_record(n, prefix=tag) for n in range(3, 5)])
        assert (
            httpx.post(
                endpoint, content=body, headers={**headers, "x-signature": sign(secret, body)}
            ).status_code
            == 202
        )
        await page.goto(f"/ingest/{source_id}")
        await expect(page.get_by_test_id("retrying-records")).to_contain_text("HTTP 5", timeout=20_000)
        await screenshot(page, "ingest-retrying")
    finally:
        httpx.post(f"{simulator_url}/__sim/config", json={"faults": {"error_share": 0.0}}).raise_for_status()
    # The list refreshes itself while records wait.
    await expect(page.get_by_test_id("sent-count")).to_have_text("5", timeout=30_000)
    await expect(page.get_by_test_id("retrying-records")).to_have_count(0)
    assert sim_count(simulator_url, metric) == 5

    # The Overview shows the source's backlog beside the runs.
    await page.goto("/")
    row = page.get_by_test_id("overview-ingest").locator(f'tr[data-source-id="{source_id}"]')
    await expect(row).to_contain_text(f"Storefront {tag}")
    await expect(row.locator("td").nth(3)).to_have_text("1")  # the refused record
    await expect(row.locator("td").nth(4)).to_have_text("5")
    await screenshot(page, "overview-ingest")
    await page.goto(f"/ingest/{source_id}")

    # Revoke: the store's requests are refused from then on.
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_test_id("revoke").click()
    await expect(page.get_by_test_id("token-state")).to_have_text("revoked")
    await screenshot(page, "ingest-revoked")
    body = orjson.dumps(event_record(9, prefix=tag))
    refused = httpx.post(endpoint, content=body, headers={**headers, "x-signature": sign(secret, body)})
    assert refused.status_code == 401
    await page.goto("/ingest")
    await expect(page.get_by_test_id("ingest-sources")).to_contain_text(f"Storefront {tag}")
    await screenshot(page, "ingest-sources")


async def test_one_endpoint_for_a_whole_tracking_plan(
    page: Page, user_factory, live_sessionmaker, live_server, simulator_url
):
    """A source routed for the whole ecommerce spec: events go out through their own presets; an
    event nobody routed is kept and counted by name, then routed from the page and sent."""
    tag = uuid.uuid4().hex[:6]
    admin = await user_factory(Role.ADMIN)
    await log_in(page, admin.username)
    await page.goto("/ingest")
    await page.get_by_test_id("ingest-name").fill(f"Tracking plan {tag}")
    await page.get_by_test_id("ingest-mapping").select_option(value="")
    await page.get_by_test_id("ingest-spec").check()
    await page.get_by_test_id("ingest-create").click()
    token = await page.get_by_test_id("new-token").input_value()
    endpoint = (await page.get_by_test_id("endpoint").inner_text()).split()[1]
    source_id = int(endpoint.rsplit("/", 1)[1])
    await expect(page.locator('tr[data-route="Order Completed"]')).to_be_visible()

    email = f"plan-{tag}@shop.test"
    person = {"userId": f"plan-{tag}", "context": {"traits": {"email": email}}}
    body = orjson.dumps(
        [
            {"event": "Order Completed", **person, "properties": {"order_id": f"P-{tag}", "total": 30,
             "currency": "USD", "products": [{"sku": "MUG", "name": "Mug", "price": 15, "quantity": 2}]}},
            {"event": "Product Viewed", **person, "messageId": f"v-{tag}", "properties": {"product_id": "1"}},
            {"event": "Wishlist Product Added", **person, "messageId": f"w-{tag}",
             "properties": {"sku": "MUG"}},
        ]
    )  # fmt: skip
    answer = httpx.post(endpoint, content=body, headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 202 and answer.json()["unrouted"] == 1, answer.text

    await page.goto(f"/ingest/{source_id}")
    order_row = page.locator('tr[data-route="Order Completed"]')
    await expect(order_row.get_by_test_id("route-sent")).to_have_text("1", timeout=20_000)
    await expect(page.locator('tr[data-route="Product Viewed"]').get_by_test_id("route-sent")).to_have_text(
        "1"
    )
    kept = page.locator('tr[data-unrouted="Wishlist Product Added"]')
    await expect(kept.get_by_test_id("unrouted-kept")).to_have_text("1")
    await page.get_by_test_id("routes").scroll_into_view_if_needed()
    await screenshot(page, "ingest-tracking-plan")

    # Routing the kept event (through the Product Added preset here) sends the record it kept.
    await kept.locator("select").select_option(label="Ecommerce spec: Product Added -> Added to Cart")
    await kept.get_by_role("button").click()
    wishlist = page.locator('tr[data-route="Wishlist Product Added"]')
    await expect(wishlist.get_by_test_id("route-sent")).to_have_text("1", timeout=20_000)
    await expect(page.locator('tr[data-unrouted="Wishlist Product Added"]')).to_have_count(0)
    assert sim_count(simulator_url, "Placed Order") >= 1
    await screenshot(page, "ingest-tracking-plan-routed")
