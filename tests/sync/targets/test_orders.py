"""Orders: grouping line rows, the guide's Placed Order / Ordered Product / Fulfilled / Canceled /
Refunded payloads (equal to seed 003, valid for the SDK), non-adjacent rows and the external sort."""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sync.mapping import Mapping, MappingOptions, NumberCast, Target, TargetKind, column
from sync.pipeline import dry_run, row_failures, run_pipeline
from sync.readers import read_csv
from sync.targets.common import MappingError
from sync.targets.orders import OrderBuilder, external_sort
from tests.sync.envelopes import events_job, single_event
from tests.sync.seed_order import SEED, as_guide_event, order_mapping, seed_csv, seed_rows


def _normalise(body: dict[str, Any]) -> dict[str, Any]:
    """Make the two documents comparable where the guide is loose: time zone suffix and list order."""
    body = copy.deepcopy(body)
    attrs = body["data"]["attributes"]
    moment = datetime.fromisoformat(attrs["time"])
    attrs["time"] = moment.replace(tzinfo=None).isoformat()  # guide writes naive UTC, we write +00:00
    attrs.pop("backfill", None)
    props = attrs["properties"]
    if "Categories" in props and "Items" in props:
        # The guide lists the union of item categories in no stated order; we keep first appearance.
        props["Categories"] = sorted(props["Categories"])
    return body


def _run(mapping: Mapping) -> list[dict[str, Any]]:
    (result,) = list(run_pipeline(mapping, seed_rows()))
    assert result.errors == [], result.errors
    assert result.rows == (1, 2)
    return result.items


def test_placed_order_equals_the_guide_and_validates() -> None:
    items = _run(order_mapping())
    assert [
        i["attributes"]["events"]["data"][0]["attributes"]["metric"]["data"]["attributes"]["name"]
        for i in items
    ] == [
        "Placed Order",
        "Ordered Product",
        "Ordered Product",
    ]
    events_job(items)
    single_event(items[0])
    assert _normalise(as_guide_event(items[0])) == _normalise(SEED["Placed Order"])
    props = items[0]["attributes"]["events"]["data"][0]["attributes"]["properties"]
    assert props["Categories"] == ["Fiction", "Children", "Classics"]
    assert props["ItemNames"] == ["Winnie the Pooh", "A Tale of Two Cities"]
    assert props["Brands"] == ["Kids Books", "Harcourt Classics"]


def test_ordered_product_equals_the_guide() -> None:
    items = _run(order_mapping())
    expected = _normalise(SEED["Ordered Product"])
    # The guide's JSON:API example reuses the order's UUID here (a copy slip: it would deduplicate
    # every line of an order); its v1 example and Klaviyo's rule use <OrderId>_<SKU>.
    expected["data"]["attributes"]["unique_id"] = "1234_WINNIEPOOH"
    assert _normalise(as_guide_event(items[1])) == expected
    second = items[2]["attributes"]["events"]["data"][0]["attributes"]
    assert second["unique_id"] == "1234_TALEOFTWO"
    assert second["value"] == 19.99
    assert second["properties"]["ProductBrand"] == "Harcourt Classics"


@pytest.mark.parametrize("metric", ["Fulfilled Order", "Canceled Order", "Refunded Order"])
def test_follow_up_order_events_equal_the_guide_and_reuse_the_unique_id(metric: str) -> None:
    (item,) = _run(order_mapping(metric, line_metric=None))
    events_job([item])
    assert _normalise(as_guide_event(item)) == _normalise(SEED[metric])
    placed = _run(order_mapping())[0]
    uid = "unique_id"
    assert (
        item["attributes"]["events"]["data"][0]["attributes"][uid]
        == (placed["attributes"]["events"]["data"][0]["attributes"][uid])
    )


def test_order_from_a_csv_file(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(seed_csv())
    results = list(run_pipeline(order_mapping(), read_csv(path)))
    assert len(results) == 1
    assert results[0].items == _run(order_mapping())


def _simple_mapping(**options: Any) -> Mapping:
    return Mapping(
        name="o",
        target=Target(kind=TargetKind.ORDER),
        options=MappingOptions(default_currency="EUR", **options),
        fields=[
            column("Order", "properties.OrderId"),
            column("Email", "email"),
            column("Date", "time"),
            column("Total", "value", required=True),
            column("SKU", "item.SKU"),
            column("Price", "item.ItemPrice"),
            column("Qty", "item.Quantity"),
        ],
    )


def _row(order: str, sku: str, price: str = "2", qty: str = "1", first: bool = False) -> dict[str, str]:
    base = {"Order": order, "SKU": sku, "Price": price, "Qty": qty, "Email": "", "Date": "", "Total": ""}
    if first:
        base.update(Email=f"{order}@x.com", Date="2024-01-15 10:00", Total="10")
    return base


def test_grouping_adjacent_rows_and_order_level_values_from_first_row() -> None:
    for_mapping = _simple_mapping()
    rows = [
        (1, _row("A", "s1", first=True)),
        (2, _row("A", "s2", price="3", qty="2")),
        (3, _row("B", "s1", first=True)),
    ]
    results = list(run_pipeline(for_mapping, rows))
    assert [(r.row_ref, r.rows, len(r.items)) for r in results] == [(1, (1, 2), 3), (3, (3,), 2)]
    placed = results[0].items[0]["attributes"]
    event = placed["events"]["data"][0]["attributes"]
    assert placed["profile"]["data"]["attributes"] == {"email": "a@x.com"}
    assert event["value"] == 10 and event["value_currency"] == "EUR"
    assert event["properties"]["Items"] == [
        {"SKU": "s1", "ItemPrice": "2", "Quantity": "1"},
        {"SKU": "s2", "ItemPrice": "3", "Quantity": "2"},
    ]
    events_job(results[0].items + results[1].items)


def test_required_order_level_column_checked_once_per_order() -> None:
    rows = [(1, _row("A", "s1")), (2, _row("A", "s2"))]
    (result,) = list(run_pipeline(_simple_mapping(), rows))
    assert [(e.rule, e.row) for e in result.errors] == [("required_missing", 1)]
    assert result.items == []


def test_line_error_rejects_the_whole_order_and_names_the_row() -> None:
    mapping = order_mapping()
    rows = seed_rows()
    rows[1][1]["ItemPrice"] = "nineteen"
    (result,) = list(run_pipeline(mapping, rows))
    assert result.items == []
    assert [(e.rule, e.row, e.column) for e in result.errors] == [("not_a_number", 2, "ItemPrice")]


def test_duplicate_sku_lines_get_distinct_unique_ids() -> None:
    rows = [(1, _row("A", "s1", first=True)), (2, _row("A", "s1"))]
    (result,) = list(run_pipeline(_simple_mapping(), rows))
    uids = [i["attributes"]["events"]["data"][0]["attributes"]["unique_id"] for i in result.items]
    assert uids == ["A", "A_s1", "A_s1_2"]


def test_row_total_computed_from_price_and_quantity() -> None:
    mapping = order_mapping()
    rows = seed_rows()
    for _, row in rows:
        row["RowTotal"] = ""
        row["Quantity"] = "3"
    (result,) = list(run_pipeline(mapping, rows))
    placed = result.items[0]["attributes"]["events"]["data"][0]["attributes"]
    assert [item["RowTotal"] for item in placed["properties"]["Items"]] == [29.97, 59.97]
    assert placed["value"] == 89.94
    assert result.items[1]["attributes"]["events"]["data"][0]["attributes"]["value"] == 29.97


def test_non_adjacent_rows_are_reported() -> None:
    rows = [
        (1, _row("A", "s1", first=True)),
        (2, _row("B", "s1", first=True)),
        (3, _row("A", "s2")),
    ]
    results = list(run_pipeline(_simple_mapping(), rows))
    assert [e.rule for e in results[2].errors] == ["order_not_adjacent"]


def test_external_sort_makes_orders_adjacent(tmp_path: Path) -> None:
    rows = [
        (1, _row("B", "b1", first=True)),
        (2, _row("A", "a1", first=True)),
        (3, _row("B", "b2")),
        (4, _row("C", "c1", first=True)),
        (5, _row("A", "a2")),
    ]
    ordered = list(external_sort(rows, lambda r: r["Order"], chunk_rows=2, tmp_dir=str(tmp_path)))
    assert [n for n, _ in ordered] == [2, 5, 1, 3, 4]
    results = list(run_pipeline(_simple_mapping(), ordered))
    assert [(r.rows, r.ok) for r in results] == [((2, 5), True), ((1, 3), True), ((4,), True)]
    assert list(tmp_path.iterdir()) == []  # temporary runs removed


def test_pipeline_sorts_orders_when_asked() -> None:
    rows = [(1, _row("B", "b1", first=True)), (2, _row("A", "a1", first=True)), (3, _row("B", "b2"))]
    results = list(run_pipeline(_simple_mapping(), rows, sort_orders=True))
    assert [(r.rows, r.ok) for r in results] == [((2,), True), ((1, 3), True)]


def test_shopify_style_follow_up_skips_orders_without_the_date() -> None:
    mapping = _simple_mapping(order_metric="Fulfilled Order", line_metric=None)
    fields = [
        f if f.target != "time" else f.model_copy(update={"skip_row_when_empty": True})
        for f in mapping.fields
    ]
    mapping = mapping.model_copy(update={"fields": fields})
    rows = [(1, _row("A", "s1", first=True)), (2, _row("A", "s2")), (3, _row("B", "s1"))]
    rows[2][1]["Total"] = "5"
    results = list(run_pipeline(mapping, rows))
    assert [(r.rows, r.skipped, len(r.items)) for r in results] == [((1, 2), False, 1), ((3,), True, 0)]


def test_order_mapping_needs_an_order_id() -> None:
    mapping = Mapping(
        name="x",
        target=Target(kind=TargetKind.ORDER),
        fields=[column("Email", "email"), column("S", "item.SKU")],
    )
    with pytest.raises(MappingError):
        OrderBuilder(mapping)


def test_orders_from_a_json_feed_with_nested_line_items() -> None:
    from sync.mapping import FieldRule, IntegerCast, NumberCast, PathSource

    def path(source: str, target: str, *transforms: Any) -> FieldRule:
        return FieldRule(source=PathSource(path=source), target=target, transforms=list(transforms))

    mapping = Mapping(
        name="feed",
        target=Target(kind=TargetKind.ORDER),
        options=MappingOptions(line_items_path="order.line_items"),
        fields=[
            path("order.name", "properties.OrderId"),
            path("order.customer.email", "email"),
            path("order.created_at", "time"),
            path("order.total_price", "value"),
            path("order.currency", "value_currency"),
            path("line.sku", "item.SKU"),
            path("line.title", "item.ProductName"),
            path("line.quantity", "item.Quantity", IntegerCast()),
            path("line.price", "item.ItemPrice", NumberCast()),
        ],
    )
    feed = [
        {
            "order": {
                "name": 1001,
                "customer": {"email": "ann@shop.io"},
                "created_at": "2024-01-15T10:23:45-05:00",
                "total_price": "34.98",
                "currency": "USD",
                "line_items": [
                    {"sku": "WINNIEPOOH", "title": "Winnie the Pooh", "quantity": 1, "price": "9.99"},
                    {"sku": "TALEOFTWO", "title": "A Tale of Two Cities", "quantity": 2, "price": "9.995"},
                ],
            }
        },
        {"order": {"name": 1002, "customer": {"email": "bo@shop.io"}, "total_price": 5, "line_items": []}},
    ]
    results = list(run_pipeline(mapping, enumerate(feed, start=1)))
    assert [(r.rows, r.ok, len(r.items)) for r in results] == [((1,), True, 3), ((2,), True, 1)]
    placed = results[0].items[0]["attributes"]["events"]["data"][0]["attributes"]
    assert placed["unique_id"] == "1001" and placed["value"] == 34.98
    assert [item["RowTotal"] for item in placed["properties"]["Items"]] == [9.99, 19.99]
    assert (
        results[0].items[2]["attributes"]["events"]["data"][0]["attributes"]["unique_id"] == "1001_TALEOFTWO"
    )
    events_job([item for r in results for item in r.items])


def test_a_failed_order_fails_each_of_its_rows_once_in_a_dry_run() -> None:
    """An out-of-range date on a 3-line order: 3 rows and 4 events, example rows listed once each."""
    rows = [(1, _row("A", "s1", first=True)), (2, _row("A", "s2")), (3, _row("A", "s1"))]
    rows[0][1]["Date"] = "1985-01-01 10:00"
    rows.append((4, _row("B", "s1", first=True)))
    summary = dry_run(_simple_mapping(line_metric="Ordered Product"), rows).as_dict()
    assert (summary["rows"], summary["rows_rejected"], summary["rows_ok"]) == (4, 3, 1)
    (tally,) = summary["errors"]
    assert (tally["rule"], tally["count"], tally["events"], tally["examples"]) == (
        "time_out_of_range",
        3,
        4,
        [1, 2, 3],
    )


def test_a_line_error_names_its_row_and_fails_the_orders_other_lines_with_it() -> None:
    rows = [(7, _row("A", "s1", first=True)), (8, _row("A", "s2", price="x")), (9, _row("A", "s3"))]
    mapping = _simple_mapping()
    fields = [
        f.model_copy(update={"transforms": [NumberCast()]}) if f.target == "item.ItemPrice" else f
        for f in mapping.fields
    ]
    (result,) = list(run_pipeline(mapping.model_copy(update={"fields": fields}), rows))
    failures = [(f.row, f.issue.rule, f.events) for f in row_failures(result)]
    assert failures == [(7, "order_rejected", 0), (8, "not_a_number", 1), (9, "order_rejected", 0)]
    message = row_failures(result)[0].issue.message
    assert "order A" in message and "row 8" in message
