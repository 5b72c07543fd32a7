"""Request bodies used across the simulator tests."""

from __future__ import annotations

from typing import Any


def event_item(email: str = "ann@shop.io", metric: str = "Placed Order", **attrs: Any) -> dict[str, Any]:
    """One events-bulk-create item with a single event."""
    event = {
        "properties": {"OrderId": "1"},
        "time": "2024-01-02T03:04:05Z",
        "value": 12.5,
        "value_currency": "USD",
        "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
    }
    event.update(attrs)
    return {
        "type": "event-bulk-create",
        "attributes": {
            "profile": {"data": {"type": "profile", "attributes": {"email": email}}},
            "events": {"data": [{"type": "event", "attributes": event}]},
        },
    }


def bulk(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The event-bulk-create-job envelope."""
    return {"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": items}}}}


def single_event(
    email: str = "ann@shop.io", metric_name: str = "Viewed Product", **attrs: Any
) -> dict[str, Any]:
    """A POST /api/events body."""
    event: dict[str, Any] = {
        "properties": {"ProductID": "p1"},
        "metric": {"data": {"type": "metric", "attributes": {"name": metric_name}}},
        "profile": {"data": {"type": "profile", "attributes": {"email": email}}},
    }
    event.update(attrs)
    return {"data": {"type": "event", "attributes": event}}


def profile_body(**attrs: Any) -> dict[str, Any]:
    """A POST /api/profile-import body."""
    return {"data": {"type": "profile", "attributes": attrs}}
