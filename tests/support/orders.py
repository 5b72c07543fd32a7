"""A Shopify-style line-item export: several CSV rows per order, order columns on the first line only,
repeated SKUs, and three orders that fail under the export's first mapping."""

from __future__ import annotations

from collections import Counter

from sync.mapping import DateParse, Email, IntegerCast, MappingOptions, NumberCast, Target, TargetKind, column
from sync.mapping import Mapping as Spec

T0 = "2025-03-01T10:00:00Z"


def _line(order: str, sku: str, price: str = "10", *, first: dict[str, str] | None = None) -> dict[str, str]:
    head = first or {}
    return {
        "Name": order,
        "Email": head.get("Email", ""),
        "Contact": head.get("Contact", ""),
        "Created at": head.get("Created at", ""),
        "Paid at": head.get("Paid at", ""),
        "Lineitem sku": sku,
        "Lineitem price": price,
        "Lineitem quantity": "1",
    }


def _head(email: str, *, contact: str | None = None, paid: str = T0) -> dict[str, str]:
    reach = email if contact is None else contact
    return {"Email": email, "Contact": reach, "Created at": T0, "Paid at": paid}


# Rows 1-3: #1001 (MUG twice). Rows 4-5: #1002, no contact on its first line. Rows 6-8: #1003 paid
# in 1985, out of Klaviyo's window. Row 9: #1004. Rows 10-11: #1005, a price that is not a number.
ROWS = [
    _line("#1001", "MUG", first=_head("ann@shop.test")),
    _line("#1001", "MUG"),
    _line("#1001", "TEA", "4"),
    _line("#1002", "MUG", first=_head("bob@shop.test", contact="")),
    _line("#1002", "TEA", "4"),
    _line("#1003", "MUG", first=_head("cat@shop.test", paid="1985-01-01T00:00:00Z")),
    _line("#1003", "MUG"),
    _line("#1003", "CUP", "6"),
    _line("#1004", "TEA", "4", first=_head("dan@shop.test")),
    _line("#1005", "MUG", first=_head("eve@shop.test")),
    _line("#1005", "CUP", "n/a"),
]
LINES = Counter(row["Name"] for row in ROWS)


def order_spec(placed: str, line: str, *, fixed: bool) -> Spec:
    """The export's mapping; the first version reads the wrong contact and date columns."""
    return Spec(
        name=f"shopify {placed}",
        target=Target(kind=TargetKind.ORDER),
        options=MappingOptions(order_metric=placed, line_metric=line),
        fields=[
            column("Name", "properties.OrderId"),
            column("Email" if fixed else "Contact", "email", Email()),
            column("Created at" if fixed else "Paid at", "time", DateParse()),
            column("Lineitem sku", "item.SKU"),
            column("Lineitem price", "item.ItemPrice", NumberCast()),
            column("Lineitem quantity", "item.Quantity", IntegerCast()),
        ],
    )
