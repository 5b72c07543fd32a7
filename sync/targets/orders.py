"""Order target: line-item rows of one order -> one order event (Placed Order, Fulfilled Order, ...)
plus one Ordered Product event per line, following Klaviyo's integration guide."""

from __future__ import annotations

import heapq
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Mapping as RowMapping
from typing import Any

import orjson

from sync.compiler import EMPTY
from sync.issues import RuleError, SkipRow
from sync.mapping import Mapping
from sync.targets.common import Item, MappingError, check_targets, split_target
from sync.targets.events import ALLOWED, Placement, Slots, event_item

ORDER_KEY = "properties.OrderId"
# Item fields the Ordered Product event leaves out (the line total becomes its value) or renames,
# as in the guide's Ordered Product example.
_LINE_ONLY_IN_ITEMS = frozenset({"ItemPrice", "RowTotal"})
_LINE_RENAMES = {"Brand": "ProductBrand"}

Row = RowMapping[str, Any]


class OrderBuilder:
    """Builds the order event and its Ordered Product events from an order's line rows."""

    def __init__(
        self,
        mapping: Mapping,
        group_required: list[tuple[str, str | None]] | None = None,
        group_skip: list[tuple[str, str | None]] | None = None,
    ) -> None:
        self.group_required = group_required or []
        self.group_skip = group_skip or []
        targets = mapping.targets()
        check_targets(targets, ALLOWED, ("properties.", "profile.", "item."), "Order")
        if ORDER_KEY not in targets:
            raise MappingError(f"an order mapping needs a field with target {ORDER_KEY} to group line rows")
        opts = mapping.options
        self.order_metric = opts.order_metric
        self.line_metric = opts.line_metric
        self.backfill = opts.backfill
        self.currency = opts.default_currency
        self.order_targets = [t for t in targets if not t.startswith("item.")]
        self.item_slots = Slots([(t, split_target(t)[1:]) for t in targets if t.startswith("item.")])
        self.has_items = bool(self.item_slots.flat or self.item_slots.nested)
        self.placement = Placement(self.order_targets)
        self.explicit = {t.removeprefix("properties.") for t in self.order_targets}

    def build(self, lines: list[dict[str, Any]]) -> list[Item]:
        """Items for one order from the resolved values of its rows (first row first)."""
        order = self._order_values(lines)
        for target, column in self.group_skip:
            if order.get(target, EMPTY) is EMPTY:
                raise SkipRow(column)
        for target, column in self.group_required:
            if order.get(target, EMPTY) is EMPTY:
                raise RuleError(
                    "required_missing", f"{target} is required but {column} is empty on every row", column
                )
        order_id: str = order[ORDER_KEY]
        items = [item for item in (self.item_slots.fill(line) for line in lines) if item]
        for item in items:
            if "RowTotal" not in item and "ItemPrice" in item:
                total = _line_total(item)
                if total is not None:
                    item["RowTotal"] = total
        properties, profile = self.placement.fill(order)
        if items and self.has_items:
            properties["Items"] = items
            self._add_rollups(properties, items)
        value = order.get("value")
        if value is None:
            value = _order_total(items)
        currency = order.get("value_currency", self.currency)
        time = order.get("time")
        out = [
            event_item(
                self.order_metric,
                profile,
                properties,
                backfill=self.backfill,
                time=time,
                value=value,
                value_currency=currency,
                unique_id=order.get("unique_id", order_id),
            )
        ]
        if self.line_metric and self.has_items:
            out.extend(self._line_events(order_id, items, profile, time, currency))
        return out

    def _order_values(self, lines: list[dict[str, Any]]) -> dict[str, Any]:
        """Order-level values: the first row's, filled from later rows where the first row is blank."""
        order = {t: lines[0][t] for t in self.order_targets if t in lines[0]}
        if len(order) < len(self.order_targets):
            for line in lines[1:]:
                for target in self.order_targets:
                    if target not in order and line.get(target, EMPTY) is not EMPTY:
                        order[target] = line[target]
        return order

    def _add_rollups(self, properties: dict[str, Any], items: list[dict[str, Any]]) -> None:
        """Top-level ItemNames, Categories, Brands: nested Items cannot be used in segments."""
        if "ItemNames" not in self.explicit:
            names = [item["ProductName"] for item in items if item.get("ProductName") is not None]
            if names:
                properties["ItemNames"] = names
        if "Categories" not in self.explicit:
            categories = _unique(_flatten(item.get("Categories") for item in items))
            if categories:
                properties["Categories"] = categories
        if "Brands" not in self.explicit:
            brands = _unique(item.get("Brand") for item in items)
            if brands:
                properties["Brands"] = brands

    def _line_events(
        self,
        order_id: str,
        items: list[dict[str, Any]],
        profile: dict[str, Any],
        time: str | None,
        currency: str | None,
    ) -> Iterator[Item]:
        seen: dict[str, int] = {}
        assert self.line_metric is not None
        for index, item in enumerate(items, start=1):
            properties: dict[str, Any] = {"OrderId": order_id}
            for key, value in item.items():
                if key not in _LINE_ONLY_IN_ITEMS:
                    properties[_LINE_RENAMES.get(key, key)] = value
            part = str(item.get("SKU") or item.get("ProductID") or index)
            unique_id = f"{order_id}_{part}"
            count = seen.get(unique_id, 0) + 1
            seen[unique_id] = count
            if count > 1:
                unique_id = f"{unique_id}_{count}"  # the same SKU on two lines must not be deduplicated
            yield event_item(
                self.line_metric,
                dict(profile),
                properties,
                backfill=self.backfill,
                time=time,
                value=_line_total(item),
                value_currency=currency,
                unique_id=unique_id,
            )


def _line_total(item: dict[str, Any]) -> float | int | None:
    total = item.get("RowTotal")
    if isinstance(total, int | float):
        return total
    price, quantity = item.get("ItemPrice"), item.get("Quantity", 1)
    if isinstance(price, int | float) and isinstance(quantity, int | float):
        return round(price * quantity, 2)
    return None


def _order_total(items: list[dict[str, Any]]) -> float | int | None:
    totals = [_line_total(item) for item in items]
    known = [t for t in totals if t is not None]
    return round(sum(known), 2) if known else None


def _flatten(values: Iterable[Any]) -> Iterator[Any]:
    for value in values:
        if isinstance(value, list):
            yield from value
        elif value is not None:
            yield value


def _unique(values: Iterable[Any]) -> list[Any]:
    return [v for v in dict.fromkeys(v for v in values if v is not None and v != "")]


# ---------------------------------------------------------------- ordering helpers


def explode_lines(rows: Iterable[tuple[int, Row]], path: tuple[str | int, ...]) -> Iterator[tuple[int, Row]]:
    """One row per element of each record's line-item array (the element under the key ``line``),
    keeping the record's number so every line of an order points at the same source record."""
    for number, record in rows:
        node: Any = record
        for key in path:
            if isinstance(key, int):
                node = node[key] if isinstance(node, list) and key < len(node) else None
            else:
                node = node.get(key) if isinstance(node, RowMapping) else None
            if node is None:
                break
        lines = node if isinstance(node, list) and node else [None]
        for line in lines:
            yield number, {**record, "line": line}


def external_sort(
    rows: Iterable[tuple[int, Row]],
    key: Callable[[Row], str | None],
    *,
    chunk_rows: int = 100_000,
    tmp_dir: str | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield rows sorted by ``key`` (stable: row order kept within a key) using bounded memory.

    For order files whose line rows are not adjacent: sorted runs of ``chunk_rows`` rows go to
    temporary files that are merged lazily. Rows must be JSON-serialisable (CSV rows are).
    """
    with tempfile.TemporaryDirectory(prefix="sync-sort-", dir=tmp_dir) as workdir:
        runs: list[str] = []
        chunk: list[tuple[str, int, RowMapping[str, Any]]] = []

        def flush() -> None:
            chunk.sort(key=lambda entry: (entry[0], entry[1]))
            path = os.path.join(workdir, f"run{len(runs):05d}.jsonl")
            with open(path, "wb") as out:
                for sort_key, number, row in chunk:
                    out.write(orjson.dumps([sort_key, number, row]))
                    out.write(b"\n")
            runs.append(path)
            chunk.clear()

        for number, row in rows:
            chunk.append((key(row) or "", number, row))
            if len(chunk) >= chunk_rows:
                flush()
        if chunk or not runs:
            flush()
        files = [open(path, "rb") for path in runs]  # noqa: SIM115 - closed in finally
        try:
            streams = [(orjson.loads(line) for line in handle) for handle in files]
            for _sort_key, number, row in heapq.merge(*streams, key=lambda entry: (entry[0], entry[1])):
                yield number, row
        finally:
            for handle in files:
                handle.close()
