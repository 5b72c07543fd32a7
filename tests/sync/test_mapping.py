"""Mapping spec: JSON round-trip, validation of the spec itself, path and template syntax."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sync.mapping import (
    ColumnSource,
    ConstantSource,
    DateParse,
    Email,
    FieldRule,
    Mapping,
    MappingOptions,
    NumberCast,
    PathSource,
    Split,
    Target,
    TargetKind,
    TemplateSource,
    column,
    parse_path,
    split_template,
    template_fields,
)
from sync.presets import shopify_orders_mapping


def _mapping() -> Mapping:
    return Mapping(
        name="Orders backfill",
        version=3,
        target=Target(kind=TargetKind.EVENT, metric="Ordered Product"),
        options=MappingOptions(default_currency="EUR", default_timezone="Europe/Berlin", date_only_hour=9),
        fields=[
            column("E-Mail", "email", Email()),
            FieldRule(source=PathSource(path="line_items[0].sku"), target="properties.SKU"),
            FieldRule(source=TemplateSource(template="{OrderId}_{SKU}"), target="unique_id"),
            FieldRule(source=ConstantSource(value="web"), target="properties.Channel"),
            column("Amount", "value", NumberCast(decimal=","), required=True),
            column("Tags", "properties.Tags", Split(separator=";"), default=[]),
            column("Date", "time", DateParse(format="%d.%m.%Y", timezone="UTC")),
        ],
    )


def test_json_round_trip() -> None:
    mapping = _mapping()
    again = Mapping.from_json(mapping.to_json())
    assert again == mapping
    assert again.to_json() == mapping.to_json()


def test_presets_round_trip() -> None:
    mapping = shopify_orders_mapping()
    assert Mapping.from_json(mapping.to_json()) == mapping


def test_source_columns_lists_everything_read() -> None:
    assert _mapping().source_columns() == ["E-Mail", "line_items", "OrderId", "SKU", "Amount", "Tags", "Date"]


def test_unknown_keys_and_ops_are_refused() -> None:
    data = _mapping().model_dump(mode="json")
    data["fields"][0]["transforms"] = [{"op": "rot13"}]
    with pytest.raises(ValidationError):
        Mapping.model_validate(data)
    data = _mapping().model_dump(mode="json")
    data["surprise"] = 1
    with pytest.raises(ValidationError):
        Mapping.model_validate(data)


def test_event_needs_metric_and_fields() -> None:
    with pytest.raises(ValidationError):
        Target(kind=TargetKind.EVENT)
    with pytest.raises(ValidationError):
        Mapping(name="x", target=Target(kind=TargetKind.PROFILE), fields=[])


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValidationError):
        MappingOptions(default_timezone="Nowhere/Town")
    with pytest.raises(ValidationError):
        MappingOptions(default_currency="euro")
    with pytest.raises(ValidationError):
        MappingOptions(date_only_hour=24)


def test_paths() -> None:
    assert parse_path("customer.email") == ("customer", "email")
    assert parse_path("line_items[0].sku") == ("line_items", 0, "sku")
    assert parse_path("a[1][2]") == ("a", 1, 2)
    for bad in ["", "[0]", "a..b", "a[x]"]:
        with pytest.raises(ValueError):
            parse_path(bad)
    with pytest.raises(ValidationError):
        PathSource(path="a..b")


def test_templates() -> None:
    assert template_fields("{OrderId}_{SKU}") == ["OrderId", "SKU"]
    assert split_template("{{x}}-{A}") == [
        (False, "{"),
        (False, "x"),
        (False, "}"),
        (False, "-"),
        (True, "A"),
    ]
    with pytest.raises(ValidationError):
        TemplateSource(template="no fields")


def test_target_syntax() -> None:
    with pytest.raises(ValidationError):
        FieldRule(source=ColumnSource(column="a"), target="properties..x")
