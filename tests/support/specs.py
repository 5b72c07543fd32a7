"""Mappings the run and schedule tests send through: profiles, catalog items and variants, orders."""

from __future__ import annotations

from typing import Any

from sync.mapping import DateParse, Email, MappingOptions, NumberCast, Target, TargetKind, column
from sync.mapping import Mapping as Spec


def profile_spec(name: str, *, external_id_only: bool = False, **options: Any) -> Spec:
    identity = [column("customer_id", "external_id")]
    if not external_id_only:
        identity = [column("email", "email"), column("phone", "phone_number"), *identity]
    return Spec(
        name=name,
        target=Target(kind=TargetKind.PROFILE),
        options=MappingOptions(**options),
        fields=[
            *identity,
            column("first", "first_name"),
            column("title", "title"),
            column("city", "location.city"),
            column("tier", "properties.Tier"),
        ],
    )


def item_spec(name: str, mode: str = "create") -> Spec:
    fields = [column("sku", "external_id"), column("price", "price")]
    if mode == "create":
        fields += [column("name", "title"), column("about", "description"), column("link", "url")]
    return Spec(
        name=name,
        target=Target(kind=TargetKind.CATALOG_ITEM),
        options=MappingOptions(catalog_mode=mode),  # type: ignore[arg-type]
        fields=fields,
    )


def variant_spec(name: str) -> Spec:
    return Spec(
        name=name,
        target=Target(kind=TargetKind.CATALOG_VARIANT),
        fields=[
            column("vsku", "external_id"),
            column("vsku", "sku"),
            column("sku", "item_external_id"),
            column("name", "title"),
            column("about", "description"),
            column("link", "url"),
            column("price", "price"),
            column("stock", "inventory_quantity"),
        ],
    )


def order_spec(metric: str) -> Spec:
    return Spec(
        name=f"feed {metric}",
        target=Target(kind=TargetKind.EVENT, metric=metric),
        fields=[
            column("email", "email", Email()),
            column("updated_at", "time", DateParse()),
            column("total", "value", NumberCast()),
            column("order_id", "properties.OrderId"),
            column("order_id", "unique_id"),
        ],
    )
