"""Routing by event name: one source, several mappings, each taking the records of one event.

A record names its event in ``event`` (the ecommerce spec's track calls, and most stores' own
webhooks). Names are compared case-insensitively with runs of spaces as one. A record whose event
has no route is *unrouted*: never mapped by another event's mapping; the caller keeps it until a
route is added. A record that names no event goes through the source's default mapping, if any.
"""

from __future__ import annotations

from collections.abc import Mapping as RowMapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sync.presets import route_key

EVENT_FIELD = "event"
NO_EVENT = ""  # the route key of records that name no event
MAX_EVENT_NAME = 200

P = TypeVar("P")


def event_name(record: RowMapping[str, Any]) -> str | None:
    """The record's event name as sent (trimmed), or None when it names none."""
    value = record.get(EVENT_FIELD)
    if isinstance(value, str):
        value = value.strip()
        return value[:MAX_EVENT_NAME] or None
    return None


def record_route(record: RowMapping[str, Any]) -> str:
    """The route key of a record: its event's key, or NO_EVENT."""
    name = event_name(record)
    return route_key(name) if name else NO_EVENT


@dataclass
class Router(Generic[P]):
    """Mappings (anything: compiled pipelines, versions) by route key, and the default for records
    without an event name."""

    routes: dict[str, P] = field(default_factory=dict)
    default: P | None = None

    def pick(self, record: RowMapping[str, Any]) -> tuple[str, P | None]:
        """(route key, its mapping) for a record; the mapping is None when the record is unrouted."""
        key = record_route(record)
        return key, self.for_key(key)

    def for_key(self, key: str | None) -> P | None:
        """The mapping of a stored route key (None, from before routing existed, is the default)."""
        if not key:
            return self.default
        return self.routes.get(key)
