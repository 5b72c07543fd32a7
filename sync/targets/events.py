"""Event target: one row -> one item for the bulk event create job (see docs/contracts.md)."""

from __future__ import annotations

from collections.abc import Mapping as RowMapping
from typing import Any

from sync.compiler import EMPTY
from sync.mapping import Mapping
from sync.targets.common import Item, MappingError, check_targets, row_hash, split_target

PROFILE_IDENTIFIERS = ("email", "phone_number", "external_id")
EVENT_ATTRIBUTES = ("time", "value", "value_currency", "unique_id")
ALLOWED = frozenset(PROFILE_IDENTIFIERS + EVENT_ATTRIBUTES)
PREFIXES = ("properties.", "profile.")


def event_item(
    metric: str,
    profile: dict[str, Any],
    properties: dict[str, Any],
    *,
    backfill: bool,
    time: str | None = None,
    value: float | int | None = None,
    value_currency: str | None = None,
    unique_id: str | None = None,
) -> Item:
    """The contract's event item: profile + one event, wrapped for the bulk create job."""
    attributes: dict[str, Any] = {"properties": properties}
    if time is not None:
        attributes["time"] = time
    if value is not None:
        attributes["value"] = value
        if value_currency is not None:
            attributes["value_currency"] = value_currency
    if unique_id is not None:
        attributes["unique_id"] = unique_id
    attributes["metric"] = {"data": {"type": "metric", "attributes": {"name": metric}}}
    return {
        "type": "event-bulk-create",
        "attributes": {
            "profile": {"data": {"type": "profile", "attributes": profile}},
            "events": {"data": [{"type": "event", "attributes": attributes}]},
            "backfill": backfill,
        },
    }


def event_attributes(item: Item) -> dict[str, Any]:
    """The event attributes inside an event item (for checks and tests)."""
    attrs: dict[str, Any] = item["attributes"]["events"]["data"][0]["attributes"]
    return attrs


class Slots:
    """Targets placed into one output object: flat keys fast, dotted paths as nested objects."""

    def __init__(self, slots: list[tuple[str, tuple[str, ...]]]) -> None:
        self.flat = [(target, path[0]) for target, path in slots if len(path) == 1]
        self.nested = [(target, path) for target, path in slots if len(path) > 1]

    def fill(self, values: dict[str, Any]) -> dict[str, Any]:
        """The object for one row's resolved values (empty targets left out)."""
        out: dict[str, Any] = {}
        for target, key in self.flat:
            value = values.get(target, EMPTY)
            if value is not EMPTY:
                out[key] = value
        for target, path in self.nested:
            value = values.get(target, EMPTY)
            if value is not EMPTY:
                node = out
                for key in path[:-1]:
                    child = node.get(key)
                    if not isinstance(child, dict):
                        child = node[key] = {}
                    node = child
                node[path[-1]] = value
        return out


class Placement:
    """Where event-level targets go: properties or profile attributes."""

    def __init__(self, targets: list[str]) -> None:
        properties: list[tuple[str, tuple[str, ...]]] = []
        profile: list[tuple[str, tuple[str, ...]]] = []
        for target in targets:
            path = split_target(target)
            if path[0] == "properties":
                properties.append((target, path[1:]))
            elif path[0] == "profile":
                if len(path) < 2:
                    raise MappingError("profile.<attribute> needs an attribute name")
                profile.append((target, path[1:]))
            elif target in PROFILE_IDENTIFIERS:
                profile.append((target, path))
        self.properties = Slots(properties)
        self.profile = Slots(profile)

    def fill(self, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(properties, profile attributes) from resolved values."""
        return self.properties.fill(values), self.profile.fill(values)


class EventBuilder:
    """Builds one event item per row for a metric with any name."""

    def __init__(self, mapping: Mapping, metric: str | None = None) -> None:
        targets = mapping.targets()
        check_targets(targets, ALLOWED, PREFIXES, "Event")
        name = metric or mapping.target.metric
        if not name:
            raise MappingError("an event mapping needs a metric name")
        self.metric = name
        self.backfill = mapping.options.backfill
        self.currency = mapping.options.default_currency
        self.placement = Placement(targets)
        self.has_unique_id = "unique_id" in targets
        # A cart's Items list (a tracking spec's products) gets the guide's top-level roll-ups,
        # unless the mapping sets them itself.
        self.rollups = "properties.Items" in targets

    def build(self, values: dict[str, Any], row: RowMapping[str, Any]) -> list[Item]:
        """One event item; a row without a mapped key gets a stable hash of its content as unique_id."""
        properties, profile = self.placement.fill(values)
        if self.rollups and type(properties.get("Items")) is list:
            cart_rollups(properties)
        unique_id = values.get("unique_id")
        if unique_id is None:
            unique_id = row_hash(row, self.metric)
        return [
            event_item(
                self.metric,
                profile,
                properties,
                backfill=self.backfill,
                time=values.get("time"),
                value=values.get("value"),
                value_currency=values.get("value_currency", self.currency),
                unique_id=unique_id,
            )
        ]


def cart_rollups(properties: dict[str, Any]) -> None:
    """Each item's RowTotal (price x quantity) when missing, and top-level ItemNames and Categories
    (the union of the items' categories) when the record has none: segments and flow filters see
    only top-level values."""
    items = [item for item in properties["Items"] if isinstance(item, dict)]
    for item in items:
        price, quantity = item.get("ItemPrice"), item.get("Quantity", 1)
        if "RowTotal" not in item and _is_number(price) and _is_number(quantity):
            item["RowTotal"] = round(price * quantity, 2)
    if "ItemNames" not in properties:
        names = [item["ProductName"] for item in items if item.get("ProductName")]
        if names:
            properties["ItemNames"] = names
    if "Categories" not in properties:
        seen: dict[str, None] = {}
        for item in items:
            found = item.get("ProductCategories", item.get("Categories"))
            for name in found if isinstance(found, list) else [found] if found else []:
                seen.setdefault(name, None)
        if seen:
            properties["Categories"] = list(seen)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
