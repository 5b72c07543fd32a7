"""The guide's example order (seed 003: Winnie the Pooh + A Tale of Two Cities) as line-item CSV rows,
with order-level columns filled on the first row only, plus the mapping that reproduces the guide."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sync.mapping import FieldRule, Mapping, MappingOptions, NumberCast, Split, Target, TargetKind, column

SEED = json.loads((Path(__file__).parent / "data" / "seed_003_events.json").read_text())["events"]

HEADER = [
    "OrderId", "EventId", "Email", "Phone", "Ordered", "Fulfilled", "Canceled", "Reason", "Currency",
    "DiscountCode", "DiscountValue", "BillFirst", "BillLast", "BillAddress1", "BillCity", "BillRegion",
    "BillCountry", "BillZip", "BillPhone", "ShipAddress1", "ProductID", "SKU", "ProductName", "Quantity",
    "ItemPrice", "RowTotal", "ProductURL", "ImageURL", "Categories", "Brand",
]  # fmt: skip
FIRST = [
    "1234", "d47aeda5-1751-4483-a81e-6fcc8ad48711", "sarah.mason@klaviyo-demo.com", "+15005550006",
    "2022-11-08T00:00:00", "2022-11-10T00:00:00", "2022-11-09T00:00:00", "No longer needed", "USD",
    "Free Shipping", "5", "John", "Smith", "123 Abc St", "Boston", "MA", "US", "02110", "+15551234567",
    "123 Abc St", "1111", "WINNIEPOOH", "Winnie the Pooh", "1", "9.99", "9.99",
    "http://www.example.com/path/to/product", "http://www.example.com/path/to/product/image.png",
    "Fiction|Children", "Kids Books",
]  # fmt: skip
SECOND = ["1234"] + [""] * 19 + [
    "1112", "TALEOFTWO", "A Tale of Two Cities", "1", "19.99", "19.99",
    "http://www.example.com/path/to/product2", "http://www.example.com/path/to/product/image2.png",
    "Fiction|Classics", "Harcourt Classics",
]  # fmt: skip


def seed_rows() -> list[tuple[int, dict[str, str]]]:
    """The two CSV rows of order 1234."""
    return [(1, dict(zip(HEADER, FIRST, strict=True))), (2, dict(zip(HEADER, SECOND, strict=True)))]


def seed_csv() -> str:
    """The same rows as CSV text."""
    lines = [",".join(HEADER)] + [",".join(f'"{cell}"' for cell in row) for row in (FIRST, SECOND)]
    return "\n".join(lines) + "\n"


def order_mapping(metric: str = "Placed Order", line_metric: str | None = "Ordered Product") -> Mapping:
    """Mapping from the rows above to the guide's order events."""
    time_column = {
        "Fulfilled Order": "Fulfilled",
        "Canceled Order": "Canceled",
        "Refunded Order": "Fulfilled",
    }
    discount = "Discount " if metric in ("Canceled Order", "Refunded Order") else "Discount"
    rules: list[FieldRule] = [
        column("OrderId", "properties.OrderId"),
        column("EventId", "unique_id"),
        column("Email", "email"),
        column("Phone", "phone_number"),
        column(time_column.get(metric, "Ordered"), "time"),
        column("Currency", "value_currency"),
        column("DiscountCode", f"properties.{discount}Code"),
        column("DiscountValue", f"properties.{discount}Value", NumberCast()),
        column("BillFirst", "properties.BillingAddress.FirstName"),
        column("BillLast", "properties.BillingAddress.LastName"),
        column("BillAddress1", "properties.BillingAddress.Address1"),
        column("BillCity", "properties.BillingAddress.City"),
        column("BillRegion", "properties.BillingAddress.RegionCode"),
        column("BillCountry", "properties.BillingAddress.CountryCode"),
        column("BillZip", "properties.BillingAddress.Zip"),
        column("BillPhone", "properties.BillingAddress.Phone"),
        column("ShipAddress1", "properties.ShippingAddress.Address1"),
        column("ProductID", "item.ProductID"),
        column("SKU", "item.SKU"),
        column("ProductName", "item.ProductName"),
        column("Quantity", "item.Quantity", NumberCast()),
        column("ItemPrice", "item.ItemPrice", NumberCast()),
        column("RowTotal", "item.RowTotal", NumberCast()),
        column("ProductURL", "item.ProductURL"),
        column("ImageURL", "item.ImageURL"),
        column("Categories", "item.Categories", Split(separator="|")),
        column("Brand", "item.Brand"),
    ]
    if metric in ("Canceled Order", "Refunded Order"):
        rules.append(column("Reason", "properties.Reason"))
    return Mapping(
        name=f"seed {metric}",
        target=Target(kind=TargetKind.ORDER),
        options=MappingOptions(order_metric=metric, line_metric=line_metric, backfill=True),
        fields=rules,
    )


def as_guide_event(item: dict[str, Any]) -> dict[str, Any]:
    """Our bulk item reshaped like the guide's single-event body, for comparison."""
    attrs = item["attributes"]
    event = dict(attrs["events"]["data"][0]["attributes"])
    event["profile"] = attrs["profile"]
    return {"data": {"type": "event", "attributes": event}}
