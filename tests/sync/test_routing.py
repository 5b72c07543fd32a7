"""Routing records by event name: case-insensitive, unrouted when no route, default for no name."""

from __future__ import annotations

from sync.routing import NO_EVENT, Router, event_name, record_route


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
