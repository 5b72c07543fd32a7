"""Presets: standard metrics match the guides, source presets produce valid payloads, header suggestions."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from sync.mapping import Mapping, TargetKind
from sync.pipeline import run_pipeline
from sync.presets import (
    ECOMMERCE_EVENTS,
    SOURCE_PRESETS,
    STANDARD_METRICS,
    detect_source,
    ecommerce_event_mapping,
    metric_preset,
    shopify_orders_mapping,
    standard_event_mapping,
    suggest_mapping,
    suggest_targets,
    woocommerce_orders_mapping,
)
from sync.readers import read_csv, read_json
from tests.sync.envelopes import events_job
from tests.sync.seed_order import SEED


def _event(item: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = item["attributes"]["events"]["data"][0]["attributes"]
    return attrs


def test_standard_metrics_cover_the_guides() -> None:
    assert set(STANDARD_METRICS) >= {
        "Viewed Product", "Added to Cart", "Started Checkout", "Placed Order", "Ordered Product",
        "Fulfilled Order", "Canceled Order", "Refunded Order", "Viewed Category", "Searched Site",
        "Clicked Banner",
    }  # fmt: skip
    for name in (
        "Placed Order",
        "Ordered Product",
        "Fulfilled Order",
        "Received Article Share",
        "Referred by Friend",
    ):
        assert set(metric_preset(name).properties) == set(SEED[name]["data"]["attributes"]["properties"]), (
            name
        )
    assert metric_preset("Viewed Product").properties == (
        "ProductName", "ProductID", "SKU", "Categories", "ImageURL", "URL", "Brand", "Price",
        "CompareAtPrice",
    )  # fmt: skip
    assert set(metric_preset("Searched Site").properties) == {
        "SearchTerm",
        "SearchTerm (autocorrected)",
        "ReturnedResults",
    }
    with pytest.raises(KeyError):
        metric_preset("Bought Stuff")


@pytest.mark.parametrize("metric", sorted(STANDARD_METRICS))
def test_every_standard_metric_preset_builds_valid_events(metric: str) -> None:
    mapping = standard_event_mapping(metric, value_column="Value", unique_id="{Email}_{Time}")
    row = {"Email": "a@b.io", "Time": "2024-02-01 12:00", "Value": "29.98"}
    for rule in mapping.fields:
        if rule.target.startswith("properties."):
            name = rule.target.removeprefix("properties.")
            row[name] = (
                "3"
                if "Price" in name or "Quantity" in name or "Value" in name or "Results" in name
                else "x, y"
            )
    (result,) = list(run_pipeline(mapping, [(1, row)]))
    assert result.ok, result.errors
    events_job(result.items)
    assert _event(result.items[0])["metric"]["data"]["attributes"]["name"] == metric
    assert Mapping.from_json(mapping.to_json()) == mapping


# ---------------------------------------------------------------- ecommerce spec (seed 002)

TRACK_CALLS = """
{"event": "Product Viewed", "messageId": "m-1", "timestamp": "2024-02-01T10:00:00Z",
 "context": {"traits": {"email": "Ann@Shop.io"}},
 "properties": {"name": "Winnie the Pooh", "product_id": "1111", "sku": "WINNIEPOOH", "price": 9.99,
   "compare_at_price": 14.99, "categories": ["Fiction", "Children"], "brand": "Kids Books",
   "url": "http://www.example.com/path/to/product", "image_url": "http://www.example.com/i.png"}}
{"event": "Product Added", "messageId": "m-2", "timestamp": "2024-02-01T10:01:00Z",
 "context": {"traits": {"email": "ann@shop.io", "phone": "+14155552671"}},
 "properties": {"value": 29.98, "name": "A Tale of Two Cities", "product_id": "1112", "sku": "TALEOFTWO",
   "price": 19.99, "quantity": 1, "categories": "Fiction, Classics",
   "item_names": ["Winnie the Pooh", "A Tale of Two Cities"],
   "checkout_url": "http://www.example.com/checkout",
   "products": [{"product_id": "1111", "sku": "WINNIEPOOH", "name": "Winnie the Pooh", "quantity": 1,
                 "price": 9.99, "total": 9.99, "categories": ["Fiction", "Children"], "extra": "dropped"}]}}
{"event": "Checkout Started", "messageId": "m-3", "timestamp": "2024-02-01T10:05:00Z",
 "context": {"traits": {"email": "ann@shop.io"}},
 "properties": {"order_id": "cart-77", "value": 29.98, "categories": ["Fiction"],
   "item_names": ["Winnie the Pooh"],
   "checkout_url": "http://www.example.com/checkout", "products": [{"product_id": "1111", "total": "9.99"}]}}
"""


def _track_calls() -> list[tuple[int, dict[str, Any]]]:
    return [(n, {k: v for k, v in json.items()}) for n, json in read_json(_ndjson(TRACK_CALLS))]


def _ndjson(text: str) -> str:
    """The fixture above wraps records over lines for reading; join each record onto one line."""
    records, current = [], ""
    for line in text.strip().splitlines():
        if line.startswith("{") and current:
            records.append(current)
            current = ""
        current += line.strip() + " "
    return "\n".join([*records, current])


def test_ecommerce_spec_mapping_table() -> None:
    calls = {row["event"]: (n, row) for n, row in _track_calls()}
    viewed = list(run_pipeline(ecommerce_event_mapping("Product Viewed"), [calls["Product Viewed"]]))[0]
    assert viewed.ok, viewed.errors
    event = _event(viewed.items[0])
    assert event["metric"]["data"]["attributes"]["name"] == "Viewed Product"
    assert event["properties"] == {
        "ProductName": "Winnie the Pooh", "ProductID": "1111", "SKU": "WINNIEPOOH",
        "ImageURL": "http://www.example.com/i.png", "URL": "http://www.example.com/path/to/product",
        "Brand": "Kids Books", "Price": 9.99, "CompareAtPrice": 14.99, "Categories": ["Fiction", "Children"],
    }  # fmt: skip
    assert event["unique_id"] == "m-1"
    assert viewed.items[0]["attributes"]["backfill"] is False

    added = list(run_pipeline(ecommerce_event_mapping("Product Added"), [calls["Product Added"]]))[0]
    assert added.ok, added.errors
    event = _event(added.items[0])
    assert event["metric"]["data"]["attributes"]["name"] == "Added to Cart"
    assert event["value"] == 29.98
    assert event["properties"]["AddedItemCategories"] == ["Fiction", "Classics"]
    assert event["properties"]["AddedItemQuantity"] == 1
    assert event["properties"]["Items"] == [
        {"ProductID": "1111", "SKU": "WINNIEPOOH", "ProductName": "Winnie the Pooh", "Quantity": 1,
         "ItemPrice": 9.99, "RowTotal": 9.99, "ProductCategories": ["Fiction", "Children"]},
    ]  # fmt: skip
    assert added.items[0]["attributes"]["profile"]["data"]["attributes"]["phone_number"] == "+14155552671"

    checkout = list(run_pipeline(ecommerce_event_mapping("Checkout Started"), [calls["Checkout Started"]]))[0]
    assert checkout.ok, checkout.errors
    event = _event(checkout.items[0])
    # The guide: the cart's id and the UNIX time, so a returning shopper's next checkout is kept.
    assert event["unique_id"] == "cart-77_1706781900"
    assert event["properties"]["Items"] == [{"ProductID": "1111", "RowTotal": 9.99}]
    events_job(viewed.items + added.items + checkout.items)
    assert {"Viewed Product", "Added to Cart", "Started Checkout", "Placed Order"} <= set(
        ECOMMERCE_EVENTS.values()
    )


# ---------------------------------------------------------------- Shopify and WooCommerce exports

SHOPIFY_HEADER = [
    "Name",
    "Email",
    "Financial Status",
    "Paid at",
    "Fulfillment Status",
    "Fulfilled at",
    "Accepts Marketing",
    "Currency",
    "Subtotal",
    "Shipping",
    "Taxes",
    "Total",
    "Discount Code",
    "Discount Amount",
    "Shipping Method",
    "Created at",
    "Lineitem quantity",
    "Lineitem name",
    "Lineitem price",
    "Lineitem compare at price",
    "Lineitem sku",
    "Lineitem requires shipping",
    "Lineitem taxable",
    "Lineitem fulfillment status",
    "Billing Name",
    "Billing Street",
    "Billing Address1",
    "Billing Address2",
    "Billing Company",
    "Billing City",
    "Billing Zip",
    "Billing Province",
    "Billing Country",
    "Billing Phone",
    "Shipping Name",
    "Shipping Street",
    "Shipping Address1",
    "Shipping Address2",
    "Shipping Company",
    "Shipping City",
    "Shipping Zip",
    "Shipping Province",
    "Shipping Country",
    "Shipping Phone",
    "Notes",
    "Note Attributes",
    "Cancelled at",
    "Payment Method",
    "Payment Reference",
    "Refunded Amount",
    "Vendor",
    "Outstanding Balance",
    "Employee",
    "Location",
    "Device ID",
    "Id",
    "Tags",
    "Risk Level",
    "Source",
    "Lineitem discount",
    "Tax 1 Name",
    "Tax 1 Value",
    "Phone",
    "Receipt Number",
    "Duties",
    "Billing Province Name",
    "Shipping Province Name",
    "Payment ID",
    "Payment Terms Name",
    "Next Payment Due At",
    "Payment References",
    "",
]


def _shopify_csv(tmp_path: Path) -> Path:
    first = {
        "Name": "#1001", "Email": "Ann@Shop.io", "Financial Status": "paid",
        "Paid at": "2024-01-15 10:24:01 -0500",
        "Fulfillment Status": "fulfilled", "Fulfilled at": "2024-01-16 09:00:00 -0500", "Currency": "USD",
        "Subtotal": "29.98", "Shipping": "5.00", "Taxes": "0.00", "Total": "34.98", "Discount Code": "",
        "Discount Amount": "0.00", "Shipping Method": "Standard", "Created at": "2024-01-15 10:23:45 -0500",
        "Lineitem quantity": "1", "Lineitem name": "Winnie the Pooh", "Lineitem price": "9.99",
        "Lineitem sku": "WINNIEPOOH", "Billing Name": "Ann Lee", "Billing Address1": "123 Abc St",
        "Billing City": "Boston", "Billing Zip": "'02110", "Billing Province": "MA", "Billing Country": "US",
        "Billing Phone": "+1 617-555-0100", "Vendor": "Kids Books", "Id": "5550001", "Source": "web",
    }  # fmt: skip
    second = {
        "Name": "#1001", "Email": "Ann@Shop.io", "Created at": "2024-01-15 10:23:45 -0500",
        "Lineitem quantity": "2", "Lineitem name": "A Tale of Two Cities", "Lineitem price": "9.995",
        "Lineitem sku": "TALEOFTWO", "Vendor": "Harcourt Classics",
    }  # fmt: skip
    other = dict(first) | {"Name": "#1002", "Email": "bo@shop.io", "Total": "1,299.00", "Fulfilled at": ""}
    other |= {"Lineitem sku": "LAMP", "Lineitem name": "Lamp", "Lineitem price": "1,299.00"}
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=SHOPIFY_HEADER, lineterminator="\r\n")
    writer.writeheader()
    for row in (first, second, other):
        writer.writerow(row)
    path = tmp_path / "orders_export_1.csv"
    path.write_text(out.getvalue(), encoding="utf-8-sig")
    return path


def test_shopify_orders_export(tmp_path: Path) -> None:
    path = _shopify_csv(tmp_path)
    reader = read_csv(path)
    assert detect_source(reader.headers) == "shopify_orders"
    results = list(run_pipeline(shopify_orders_mapping(), reader))
    assert [r.rows for r in results] == [(1, 2), (3,)]
    assert all(r.ok for r in results), [r.errors for r in results]
    placed, line1, line2 = results[0].items
    event = _event(placed)
    assert event["time"] == "2024-01-15T15:23:45+00:00"
    assert event["value"] == 34.98 and event["value_currency"] == "USD"
    assert event["unique_id"] == "#1001"
    assert event["properties"]["ItemNames"] == ["Winnie the Pooh", "A Tale of Two Cities"]
    assert event["properties"]["Brands"] == ["Kids Books", "Harcourt Classics"]
    assert event["properties"]["Items"][1] == {
        "SKU": "TALEOFTWO", "ProductName": "A Tale of Two Cities", "Quantity": 2, "ItemPrice": 9.995,
        "Brand": "Harcourt Classics", "RowTotal": 19.99,
    }  # fmt: skip
    assert event["properties"]["BillingAddress"]["City"] == "Boston"
    assert _event(line1)["unique_id"] == "#1001_WINNIEPOOH"
    assert _event(line2)["value"] == 19.99
    assert _event(results[1].items[0])["value"] == 1299
    events_job([item for r in results for item in r.items])


def test_shopify_fulfilled_orders_skip_unfulfilled(tmp_path: Path) -> None:
    mapping = shopify_orders_mapping("Fulfilled Order", line_metric=None)
    results = list(run_pipeline(mapping, read_csv(_shopify_csv(tmp_path))))
    assert [(r.rows, r.skipped, len(r.items)) for r in results] == [((1, 2), False, 1), ((3,), True, 0)]
    assert _event(results[0].items[0])["unique_id"] == "#1001"  # same as the Placed Order
    assert _event(results[0].items[0])["time"] == "2024-01-16T14:00:00+00:00"


def test_woocommerce_orders_export(tmp_path: Path) -> None:
    header = [
        "Order Number", "Order Status", "Order Date", "Customer Note", "First Name (Billing)",
        "Last Name (Billing)", "Company (Billing)", "Address 1&2 (Billing)", "City (Billing)",
        "State Code (Billing)", "Postcode (Billing)", "Country Code (Billing)", "Email (Billing)",
        "Phone (Billing)", "Payment Method Title", "Cart Discount Amount", "Order Subtotal Amount",
        "Shipping Method Title", "Order Shipping Amount", "Order Refund Amount", "Order Total Amount",
        "Order Total Tax Amount", "SKU", "Item #", "Item Name", "Quantity (- Refund)", "Item Cost",
        "Coupon Code", "Discount Amount", "Discount Amount Tax",
    ]  # fmt: skip
    base = {
        "Order Number": "4711", "Order Status": "completed", "Order Date": "2024-03-02 18:30",
        "First Name (Billing)": "Jörg", "Email (Billing)": "joerg@example.org", "Order Total Amount": "42,50",
        "Country Code (Billing)": "DE", "Cart Discount Amount": "0",
    }  # fmt: skip
    rows = [
        base
        | {
            "SKU": "MUG",
            "Item #": "1",
            "Item Name": "Tasse",
            "Quantity (- Refund)": "2",
            "Item Cost": "12,50",
        },
        base
        | {
            "SKU": "TEE",
            "Item #": "2",
            "Item Name": "T-Shirt",
            "Quantity (- Refund)": "1",
            "Item Cost": "17,50",
        },
    ]
    path = tmp_path / "woo.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, delimiter=";")
        writer.writeheader()
        writer.writerows(rows)
    reader = read_csv(path)
    assert reader.delimiter == ";"
    assert detect_source(reader.headers) == "woocommerce_orders"
    mapping = woocommerce_orders_mapping(currency="EUR", timezone="Europe/Berlin")
    (result,) = list(run_pipeline(mapping, reader))
    assert result.ok, result.errors
    placed = _event(result.items[0])
    assert placed["value"] == 42.5 and placed["value_currency"] == "EUR"
    assert placed["time"] == "2024-03-02T17:30:00+00:00"
    assert [_event(i)["value"] for i in result.items[1:]] == [25, 17.5]
    events_job(result.items)


# ---------------------------------------------------------------- suggestions


def test_header_suggestions() -> None:
    suggestions = suggest_targets(["Email Address", "Lineitem sku", "Phone", "Order Date", "Total", "Colour"])
    assert {h: (s.target if s else None) for h, s in suggestions.items()} == {
        "Email Address": "email",
        "Lineitem sku": "properties.SKU",
        "Phone": "phone_number",
        "Order Date": "time",
        "Total": "value",
        "Colour": None,
    }
    order = suggest_targets(SHOPIFY_HEADER, TargetKind.ORDER)
    assert order["Name"] and order["Name"].target == "properties.OrderId"
    assert order["Lineitem sku"] and order["Lineitem sku"].target == "item.SKU"
    assert order["Lineitem quantity"] and order["Lineitem quantity"].transforms[0].op == "integer"
    assert order["Billing Phone"] and order["Billing Phone"].target == "phone_number"
    assert order["Phone"] is None  # each target once
    profile = suggest_targets(["E-mail", "First Name", "Mobile", "Zip", "Total"], TargetKind.PROFILE)
    assert [s.target if s else None for s in profile.values()] == [
        "email", "first_name", "phone_number", "location.zip", None,
    ]  # fmt: skip


def test_suggest_mapping_builds_a_usable_draft() -> None:
    mapping = suggest_mapping(["Email", "Created at", "Total", "Currency"], metric="Placed Order")
    assert mapping is not None
    (result,) = list(
        run_pipeline(
            mapping,
            [(1, {"Email": "a@b.io", "Created at": "2024-01-01 10:00", "Total": "5", "Currency": "usd"})],
        )
    )
    assert result.ok
    assert suggest_mapping(["Colour"]) is None


def test_source_preset_registry_builds_valid_mappings() -> None:
    assert {"shopify_orders", "woocommerce_orders", "ecommerce_spec:Product Viewed"} <= set(SOURCE_PRESETS)
    for key, preset in SOURCE_PRESETS.items():
        mapping = preset.build()
        assert preset.key == key and preset.title
        assert Mapping.from_json(mapping.to_json()) == mapping


ONSITE = json.loads((Path(__file__).parent / "data" / "seed_onsite_events.json").read_text())["events"]


@pytest.mark.parametrize("metric", sorted(ONSITE))
def test_onsite_metric_presets_reproduce_the_guide_from_a_flat_csv(metric: str, tmp_path: Path) -> None:
    """A backfill CSV with one column per property (lists comma-joined) gives the guide's properties."""
    expected = {k: v for k, v in ONSITE[metric].items() if not k.startswith("$")}
    row = {
        "Email": "ann@shop.io",
        "Time": "2024-02-01T10:00:00Z",
        "Value": str(ONSITE[metric].get("$value", "")),
    }
    row |= {"EventId": ONSITE[metric].get("$event_id", "")}
    row |= {k: ", ".join(v) if isinstance(v, list) else str(v) for k, v in expected.items()}
    path = tmp_path / "events.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    mapping = standard_event_mapping(
        metric,
        value_column="Value" if "$value" in ONSITE[metric] else None,
        unique_id="EventId" if "$event_id" in ONSITE[metric] else None,
    )
    (result,) = list(run_pipeline(mapping, read_csv(path)))
    assert result.ok, result.errors
    event = _event(result.items[0])
    assert event["properties"] == expected
    assert event.get("value") == ONSITE[metric].get("$value")
    if "$event_id" in ONSITE[metric]:
        assert event["unique_id"] == ONSITE[metric]["$event_id"]
    events_job(result.items)
