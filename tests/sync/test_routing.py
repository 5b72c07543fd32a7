"""Routing records by event name: case-insensitive, unrouted when no route, default for no name."""

from __future__ import annotations

from sync.mapping import Mapping, MappingOptions, Target, TargetKind, column
from sync.pipeline import OrderLayout, Pipeline
from sync.presets import ecommerce_event_mapping
from sync.routing import NO_EVENT, RoutedPipeline, Router, event_name, mapping_event_keys, record_route


def test_routes_by_event_name_without_case_and_keeps_the_rest_unrouted() -> None:
    router: Router[str] = Router({"order completed": "orders", "product added": "carts"}, default="plain")
    assert router.pick({"event": "Order Completed"}) == ("order completed", "orders")
    assert router.pick({"event": "  PRODUCT   added "}) == ("product added", "carts")
    # Another event is never taken by a route it does not name, nor by the default.
    assert router.pick({"event": "Order Refunded"}) == ("order refunded", None)
    assert router.pick({"order_id": "1"}) == (NO_EVENT, "plain")
    assert router.pick({"event": ""}) == (NO_EVENT, "plain")
    assert Router({"a": "x"}).pick({"id": 1}) == (NO_EVENT, None)
    # Rows stored before routing existed (route None) go through the default, as they did.
    assert router.for_key(None) == "plain" and router.for_key("order refunded") is None


def test_event_names_are_read_from_text_only() -> None:
    assert event_name({"event": 12}) is None and record_route({"event": ["x"]}) == NO_EVENT
    assert event_name({"event": " Cart Viewed "}) == "Cart Viewed"


def _csv_orders() -> Pipeline:
    return Pipeline(
        Mapping(
            name="orders",
            target=Target(kind=TargetKind.ORDER),
            options=MappingOptions(order_metric="Placed Order", line_metric=None),
            fields=[
                column("email", "email"),
                column("order", "properties.OrderId", required=True),
                column("sku", "item.SKU"),
            ],
        )
    )


def test_a_mapping_is_for_its_metric_and_the_spec_events_that_become_it() -> None:
    assert mapping_event_keys(ecommerce_event_mapping("Product Added")) == {"product added", "added to cart"}
    assert mapping_event_keys(ecommerce_event_mapping("Product Viewed")) == {
        "product viewed", "product clicked", "viewed product",
    }  # fmt: skip
    assert mapping_event_keys(ecommerce_event_mapping("Order Completed")) == {
        "order completed",
        "placed order",
    }
    # One that reads the event itself takes every record (one metric for several events).
    reads_event = Mapping(
        name="activity",
        target=Target(kind=TargetKind.EVENT, metric="Store Activity"),
        fields=[column("email", "email"), column("event", "properties.Type")],
    )
    assert mapping_event_keys(reads_event) is None


def test_records_of_an_event_without_a_route_are_skipped_as_unrouted_never_mapped() -> None:
    added = Pipeline(ecommerce_event_mapping("Product Added"))
    keys = mapping_event_keys(added.mapping)
    assert keys is not None
    routed = RoutedPipeline(dict.fromkeys(keys, added), added)
    rows = [
        (1, {"event": "Product Added", "messageId": "m1", "userId": "u1"}),
        (2, {"event": "Order Completed", "properties": {"order_id": "o1", "total": 99.99}, "userId": "u1"}),
        (3, {"messageId": "m3", "userId": "u1"}),  # names no event: the run's own mapping
    ]
    results = list(routed.run(rows))
    assert [(r.row_ref, len(r.items), r.skipped) for r in results] == [
        (1, 1, False),
        (2, 0, True),
        (3, 1, False),
    ]
    assert [(w.rule, w.message, w.column) for w in results[1].warnings] == [
        ("unrouted", "unrouted: Order Completed", "event")
    ]


def test_an_order_whose_rows_another_event_interrupts_is_refused_whole() -> None:
    orders = _csv_orders()
    routed = RoutedPipeline({"placed order": orders}, qualify=True)
    rows = [
        (1, {"event": "Placed Order", "email": "a@shop.test", "order": "o1", "sku": "A"}),
        (2, {"event": "Product Added", "email": "a@shop.test"}),
        (3, {"event": "Placed Order", "email": "a@shop.test", "order": "o1", "sku": "B"}),
        (4, {"event": "Placed Order", "email": "b@shop.test", "order": "o2", "sku": "C"}),
    ]
    layout = OrderLayout(routed)
    for _, row in rows:
        layout.add(row)
    results = [layout.whole(r) for r in routed.run(rows)]
    assert [(r.rows, r.key, bool(r.items), [e.rule for e in r.errors]) for r in results] == [
        ((1,), "o1 (Placed Order)", False, ["order_incomplete"]),
        ((2,), None, False, []),
        ((3,), "o1 (Placed Order)", False, ["order_incomplete"]),
        ((4,), "o2 (Placed Order)", True, []),
    ]
