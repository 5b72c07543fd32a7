"""The ecommerce spec's documented example events, mapped by the presets, are the guide's payloads;
identity rules (userId, anonymousId, bad optional identifiers) and the spec's fallbacks."""

from __future__ import annotations

from typing import Any

import pytest

from sync.pipeline import run_pipeline
from sync.presets import ECOMMERCE_EVENTS, ecommerce_event_mapping, route_key
from tests.support.ecommerce_spec import EXAMPLES, PROFILE, expected
from tests.sync.envelopes import events_job, single_event


def _events(event: str, call: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    (result,) = list(run_pipeline(ecommerce_event_mapping(event), [(1, call)]))
    return result.items, result


def _shape(item: dict[str, Any]) -> dict[str, Any]:
    attrs = dict(item["attributes"]["events"]["data"][0]["attributes"])
    attrs["metric"] = attrs["metric"]["data"]["attributes"]["name"]
    return attrs


@pytest.mark.parametrize("event", sorted(EXAMPLES))
def test_each_documented_example_becomes_the_guides_payload(event: str) -> None:
    items, result = _events(event, EXAMPLES[event])
    assert result.ok, result.errors
    assert [_shape(item) for item in items] == expected(event)
    for item in items:
        assert item["attributes"]["profile"]["data"]["attributes"] == PROFILE
        assert item["attributes"]["backfill"] is False
        single_event(item)  # each validates against the klaviyo-api SDK models, alone and in bulk
    events_job(items)


def test_every_spec_event_has_a_preset_and_an_example() -> None:
    assert set(ECOMMERCE_EVENTS) - {"Category Viewed"} == set(EXAMPLES) | {"Product Clicked"}
    assert route_key("  ORDER   Completed ") == route_key("Order Completed") == "order completed"


def test_order_completed_ids_match_the_csv_order_presets() -> None:
    """Placed Order is the order id and each Ordered Product <order>_<sku>, as from a CSV export,
    so a store backfilled from CSV and then tracked live never counts an order twice."""
    items, _ = _events("Order Completed", EXAMPLES["Order Completed"])
    assert [_shape(item)["unique_id"] for item in items] == [
        "50314b8e9bcf000000000000",
        "50314b8e9bcf000000000000_45790-32",
        "50314b8e9bcf000000000000_46493-32",
    ]


def test_value_prefers_total_then_revenue_then_value_and_currency_is_kept() -> None:
    call = {
        "event": "Order Completed", "userId": "u-9", "timestamp": "2026-11-30T10:00:00Z",
        "properties": {"order_id": "o-9", "total": 99.99, "revenue": 90, "value": 80, "currency": "eur"},
    }  # fmt: skip
    items, _ = _events("Order Completed", call)
    assert (_shape(items[0])["value"], _shape(items[0])["value_currency"]) == (99.99, "EUR")
    del call["properties"]["total"]  # type: ignore[attr-defined]
    assert _shape(_events("Order Completed", call)[0][0])["value"] == 90
    del call["properties"]["revenue"]  # type: ignore[attr-defined]
    assert _shape(_events("Order Completed", call)[0][0])["value"] == 80


def test_user_id_alone_identifies_the_person_as_external_id() -> None:
    call = {"event": "Product Viewed", "userId": "019mr8mf4r", "properties": {"product_id": "p-1"}}
    items, result = _events("Product Viewed", call)
    assert result.ok, result.errors
    assert items[0]["attributes"]["profile"]["data"]["attributes"] == {"external_id": "019mr8mf4r"}


def test_an_anonymous_id_alone_is_refused_with_the_reason() -> None:
    call = {"event": "Product Viewed", "anonymousId": "23adfd82-aa0f", "properties": {"product_id": "p-1"}}
    _, result = _events("Product Viewed", call)
    assert [(e.rule, e.column) for e in result.errors] == [("missing_profile_identifier", "anonymousId")]
    assert "anonymousId" in result.errors[0].message and "browser" in result.errors[0].message
    # With a person as well, the anonymousId is simply not used.
    items, result = _events("Product Viewed", call | {"userId": "u-1"})
    assert result.ok and items[0]["attributes"]["profile"]["data"]["attributes"] == {"external_id": "u-1"}


@pytest.mark.parametrize("event", ["Product Added", "Order Completed"])
def test_a_bad_phone_with_a_good_email_is_dropped_with_a_warning(event: str) -> None:
    call = EXAMPLES[event] | {"userId": None}
    call["context"] = {"traits": {"email": "ann@shop.test", "phone": "9112340375"}}
    items, result = _events(event, call)
    assert result.ok, result.errors
    assert [w.rule for w in result.warnings] == ["phone_dropped"]
    assert "9112340375" in result.warnings[0].message
    assert all(i["attributes"]["profile"]["data"]["attributes"] == {"email": "ann@shop.test"} for i in items)


def test_a_bad_email_with_a_good_phone_is_dropped_and_with_nothing_else_refused() -> None:
    call = {"event": "Product Viewed", "properties": {"product_id": "p-1"}}
    call["context"] = {"traits": {"email": "not-an-address", "phone": "+14155552671"}}
    items, result = _events("Product Viewed", call)
    assert result.ok and [w.rule for w in result.warnings] == ["email_dropped"]
    assert items[0]["attributes"]["profile"]["data"]["attributes"] == {"phone_number": "+14155552671"}
    call["context"] = {"traits": {"email": "not-an-address", "phone": "9112340375"}}
    _, result = _events("Product Viewed", call)
    assert sorted(e.rule for e in result.errors) == ["invalid_email", "invalid_phone"]
    assert result.warnings == []


def test_time_falls_back_to_original_timestamp_then_sent_at() -> None:
    base = {"event": "Product Viewed", "userId": "u-1", "properties": {"product_id": "p-1"}}
    both = base | {"originalTimestamp": "2026-11-29T08:00:00Z", "sentAt": "2026-11-29T08:00:05Z"}
    assert _shape(_events("Product Viewed", both)[0][0])["time"] == "2026-11-29T08:00:00+00:00"
    sent = base | {"sentAt": "2026-11-29T08:00:05Z"}
    assert _shape(_events("Product Viewed", sent)[0][0])["time"] == "2026-11-29T08:00:05+00:00"


def test_a_returning_shoppers_second_checkout_has_its_own_id() -> None:
    first = EXAMPLES["Checkout Started"]
    again = first | {"timestamp": "2026-11-30T12:07:00Z", "messageId": "msg-checkout-2"}
    ids = [_shape(_events("Checkout Started", call)[0][0])["unique_id"] for call in (first, again)]
    assert ids[0] != ids[1] and all(i.startswith("50314b8e9bcf000000000000_") for i in ids)
    with_cart = first | {"properties": first["properties"] | {"cart_id": "cart-5"}}
    assert _shape(_events("Checkout Started", with_cart)[0][0])["unique_id"] == "cart-5_1796033220"


def test_string_categories_are_split_in_items_and_rolled_up() -> None:
    call = {
        "event": "Checkout Started", "userId": "u-1", "timestamp": "2026-11-30T10:07:00Z",
        "properties": {"cart_id": "c-1", "products": [
            {"product_id": "1", "name": "A", "price": 2, "quantity": 3, "category": "Fiction, Children"},
            {"product_id": "2", "name": "B", "price": 1, "category": "Fiction, Classics"},
        ]},
    }  # fmt: skip
    event = _shape(_events("Checkout Started", call)[0][0])
    assert [i["ProductCategories"] for i in event["properties"]["Items"]] == [
        ["Fiction", "Children"],
        ["Fiction", "Classics"],
    ]
    assert event["properties"]["Categories"] == ["Fiction", "Children", "Classics"]
    assert [i["RowTotal"] for i in event["properties"]["Items"]] == [6, 1]
