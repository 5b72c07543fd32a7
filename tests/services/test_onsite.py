"""Onsite service: defaults that follow the mappings, the public key rule, and the demo pages."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from models import Account
from services import onsite
from sync.mapping import FieldRule, PathSource, Target, TargetKind, column
from sync.mapping import Mapping as Spec
from tests.sync.test_onsite import node


def test_defaults_take_the_catalog_and_order_mappings_field_names():
    catalog = Spec(
        name="Products",
        target=Target(kind=TargetKind.CATALOG_ITEM),
        fields=[column("Handle", "external_id"), column("Product Title", "title"), column("URL", "url")],
    )
    orders = Spec(
        name="Orders",
        target=Target(kind=TargetKind.ORDER),
        fields=[
            column("Name", "unique_id"),
            column("Lineitem sku", "item.SKU"),
            FieldRule(source=PathSource(path="line.product_id"), target="item.ProductID"),
        ],
    )
    spec = onsite.suggested(catalog, orders)
    viewed = spec.metrics["Viewed Product"].fields
    assert viewed == {
        "ProductID": "product.handle",
        "ProductName": "product.product_title",
        "URL": "product.url",
    }
    assert spec.metrics["Added to Cart"].fields["AddedItemProductID"] == "product.handle"
    assert spec.metrics["Started Checkout"].item_fields == {"ProductID": "product_id", "SKU": "lineitem_sku"}
    # Bound like this, nothing disagrees with the mappings it came from.
    assert [f for f in onsite.onsite.check(spec, catalog, orders) if "ProductID" in f.field] == []


def test_the_loader_needs_the_accounts_public_key_unless_sandbox():
    assert onsite.public_key(Account(label="Sandbox", sandbox=True)) == "SBX000"
    assert onsite.public_key(Account(label="Live", sandbox=False, public_key="AbC123")) == "AbC123"
    with pytest.raises(onsite.OnsiteError, match="no public API key .* Connection page"):
        onsite.public_key(Account(label="Live", sandbox=False, public_key=None))


def test_demo_pages_are_valid_html_scripts_with_sample_values_at_every_bound_path():
    spec = onsite.suggested(None, None)
    viewed = spec.metrics["Viewed Product"].model_copy(
        update={
            "fields": {"ProductID": "product.id", "ProductName": "product.title", "Price": "product.price"}
        }
    )
    spec = spec.model_copy(update={"metrics": {**spec.metrics, "Viewed Product": viewed}})
    store = onsite.sample_store(spec)
    assert store["product"] == {"id": "SBX-TEE-1", "title": 'Sandbox Tee "Classic" </script>', "price": 19.5}
    assert [line["product_id"] for line in store["cart"]["items"]] == ["SBX-TEE-1-1", "SBX-TEE-1-2"]
    assert store["customer"]["email"] == onsite.DEMO_EMAIL
    pages = onsite.demo_pages(spec, "http://127.0.0.1:8100")
    assert set(pages) == {"product", "cart", "checkout"}
    results = node([{"id": k, "engine": "html", "template": v, "run": False} for k, v in pages.items()])
    for key, result in results.items():
        assert result["errors"] == [], key
        # Each <script> opened is closed where it should be: no value ended one early.
        assert result["scripts"] == result["opened"], key
    assert 'src="http://127.0.0.1:8100/onsite/js/SBX000/klaviyo.js"' in pages["product"]
    assert 'klaviyo.track("Viewed Product", item)' in pages["product"]
    assert "Started Checkout" in pages["checkout"] and "Viewed Product" not in pages["checkout"]
    variables = re.search(r"var product = (.*?);\n", pages["product"])
    assert variables and json.loads(variables.group(1))["title"] == 'Sandbox Tee "Classic" </script>'


async def test_try_it_says_so_when_the_sandbox_is_not_running(settings):
    down = settings.model_copy(update={"sandbox_url": "http://127.0.0.1:9"})
    with pytest.raises(onsite.OnsiteError, match=r"sandbox simulator at http://127.0.0.1:9 did not take"):
        await onsite.publish_demo(onsite.suggested(None, None), down)


async def test_try_it_pages_are_hosted_by_the_sandbox(settings):
    from simulator.server import SimulatorServer

    with SimulatorServer() as sim:
        url = await onsite.publish_demo(
            onsite.suggested(None, None), settings.model_copy(update={"sandbox_url": sim.base_url})
        )
        assert url.startswith(f"{sim.base_url}/onsite/demo/") and url.endswith("/product")
        async with httpx.AsyncClient() as client:
            page = await client.get(url)
            cart = await client.get(url.removesuffix("product") + "cart")
    assert page.status_code == 200 and 'klaviyo.track("Viewed Product", item);' in page.text
    assert f'src="{sim.base_url}/onsite/js/SBX000/klaviyo.js"' in page.text
    assert cart.status_code == 200 and "Added to Cart" in cart.text


def test_demo_pages_run_a_liquid_set_as_plain_javascript_without_its_filters():
    spec = onsite.suggested(None, None).model_copy(update={"syntax": onsite.Syntax.LIQUID})
    viewed = spec.metrics["Viewed Product"].model_copy(
        update={"fields": {"ProductID": "product.id", "Price": "product.price_cents | divided_by: 100.0"}}
    )
    spec = spec.model_copy(update={"metrics": {**spec.metrics, "Viewed Product": viewed}})
    pages = onsite.demo_pages(spec, "http://127.0.0.1:8100")
    assert '"Price": product.price_cents' in pages["product"] and "divided_by" not in pages["product"]
    assert onsite.sample_store(spec)["product"]["price_cents"] == 19.5
