"""The compiled field rules: sources, empty vs missing, defaults, required, skip, implicit transforms."""

from __future__ import annotations

import pytest

from sync.compiler import EMPTY, compile_mapping
from sync.issues import Issue, MappingError, SkipRow
from sync.mapping import (
    ConstantSource,
    FieldRule,
    MapObjects,
    Mapping,
    MappingOptions,
    NumberCast,
    PathSource,
    Split,
    Target,
    TargetKind,
    TemplateSource,
    column,
)


def _resolve(fields: list[FieldRule], row: dict[str, object], **options: object) -> tuple[dict, list, list]:
    kind = options.pop("kind", TargetKind.EVENT)
    mapping = Mapping(
        name="t",
        target=Target(kind=kind, metric="M" if kind is TargetKind.EVENT else None),
        options=MappingOptions(**options),
        fields=fields,
    )
    errors: list[Issue] = []
    warnings: list[Issue] = []
    values = compile_mapping(mapping).resolve(row, errors, warnings)
    return values, errors, warnings


def test_column_values_are_trimmed_and_empty_cells_left_out() -> None:
    values, errors, _ = _resolve(
        [column("A", "properties.A"), column("B", "properties.B"), column("C", "properties.C")],
        {"A": "  x  ", "B": "   "},
    )
    assert values == {"properties.A": "x"}
    assert errors == []


def test_path_sources_walk_nested_records() -> None:
    row = {"customer": {"email": "A@B.io"}, "line_items": [{"sku": "S1"}, {"sku": "S2"}]}
    values, errors, _ = _resolve(
        [
            FieldRule(source=PathSource(path="customer.email"), target="email"),
            FieldRule(source=PathSource(path="line_items[1].sku"), target="properties.SKU"),
            FieldRule(source=PathSource(path="line_items[5].sku"), target="properties.Missing"),
            FieldRule(source=PathSource(path="customer.email.x"), target="properties.NotAnObject"),
        ],
        row,
    )
    assert values == {"email": "a@b.io", "properties.SKU": "S2"}
    assert errors == []


def test_templates_and_constants() -> None:
    fields = [
        FieldRule(source=TemplateSource(template="{OrderId}_{SKU}"), target="unique_id"),
        FieldRule(source=ConstantSource(value=True), target="properties.Imported"),
    ]
    values, _, _ = _resolve(fields, {"OrderId": 1234, "SKU": " WINNIEPOOH "})
    assert values == {"unique_id": "1234_WINNIEPOOH", "properties.Imported": True}
    values, _, _ = _resolve(fields, {"OrderId": "1234", "SKU": ""})
    assert "unique_id" not in values  # a key built from a missing part is no key


def test_defaults_required_and_skip() -> None:
    fields = [
        column("Currency", "value_currency", default="USD"),
        column("Total", "value", required=True),
    ]
    values, errors, _ = _resolve(fields, {"Currency": "", "Total": ""})
    assert values == {"value_currency": "USD"}
    assert [e.rule for e in errors] == ["required_missing"]
    assert errors[0].column == "Total"
    with pytest.raises(SkipRow):
        _resolve([column("Paid at", "time", skip_row_when_empty=True)], {"Paid at": " "})


def test_implicit_transforms_by_target() -> None:
    values, errors, _ = _resolve(
        [
            column("E", "email"),
            column("P", "phone_number"),
            column("T", "time"),
            column("V", "value"),
            column("C", "value_currency"),
            column("Id", "unique_id"),
        ],
        {
            "E": " Jane@Shop.COM",
            "P": "(415) 555-2671",
            "T": "2024-01-15 10:00",
            "V": "$1,234.50",
            "C": "usd",
            "Id": 1.0,
        },
    )
    assert errors == []
    assert values == {
        "email": "jane@shop.com",
        "phone_number": "+14155552671",
        "time": "2024-01-15T10:00:00+00:00",
        "value": 1234.5,
        "value_currency": "USD",
        "unique_id": "1",
    }


def test_every_failing_field_is_reported_with_its_column() -> None:
    _, errors, warnings = _resolve(
        [column("E", "email"), column("V", "value"), column("Q", "properties.Q", NumberCast())],
        {"E": "nope", "V": "abc", "Q": "nan"},
    )
    assert [(e.rule, e.column) for e in errors] == [("not_a_number", "V"), ("not_finite", "Q")]
    # An event's identifier is dropped with a warning; the pipeline refuses the event when no
    # other identifier is left (tests/sync/test_pipeline.py).
    assert [(w.rule, w.column) for w in warnings] == [("email_dropped", "E")]


def test_date_only_warning_names_zone_and_hour() -> None:
    values, _, warnings = _resolve(
        [column("D", "time")], {"D": "2024-01-15"}, default_timezone="America/New_York", date_only_hour=9
    )
    assert values["time"] == "2024-01-15T14:00:00+00:00"
    assert [w.rule for w in warnings] == ["date_without_time"]
    assert "09:00 America/New_York" in warnings[0].message
    assert warnings[0].severity == "warning"


def test_example_com_warning() -> None:
    _, _, warnings = _resolve([column("E", "email")], {"E": "test@example.com"})
    assert [w.rule for w in warnings] == ["example_address"]


def test_transforms_apply_to_each_list_element() -> None:
    values, _, _ = _resolve(
        [column("P", "properties.Prices", Split(separator="|"), NumberCast())], {"P": "1,5|2"}
    )
    assert values == {"properties.Prices": [1.5, 2]}


def test_map_objects() -> None:
    rule = FieldRule(
        source=PathSource(path="products"),
        target="properties.Items",
        transforms=[MapObjects(keys={"sku": "SKU", "price": "ItemPrice"}, numbers=["ItemPrice"])],
    )
    values, _, _ = _resolve([rule], {"products": [{"sku": "A", "price": "9.99", "other": 1}, {"sku": "B"}]})
    assert values == {"properties.Items": [{"SKU": "A", "ItemPrice": 9.99}, {"SKU": "B"}]}


def test_profile_clear_empty_keeps_empty_marker() -> None:
    values, _, _ = _resolve(
        [column("E", "email"), column("F", "first_name")],
        {"E": "a@b.co", "F": ""},
        kind=TargetKind.PROFILE,
        clear_empty=True,
    )
    assert values == {"email": "a@b.co", "first_name": EMPTY}


def test_drop_invalid_phone_on_profiles() -> None:
    values, errors, warnings = _resolve(
        [column("E", "email"), column("P", "phone_number")],
        {"E": "a@b.co", "P": "12345"},
        kind=TargetKind.PROFILE,
        drop_invalid_phone=True,
        clear_empty=True,
    )
    assert values == {"email": "a@b.co"}  # dropped, not cleared
    assert errors == []
    assert [w.rule for w in warnings] == ["phone_dropped"]


def test_defaults_are_cleaned_like_cells_and_checked_early() -> None:
    values, _, _ = _resolve(
        [column("D", "time", default="2024-01-02 10:00"), column("V", "value", default="1,5")], {}
    )
    assert values == {"time": "2024-01-02T10:00:00+00:00", "value": 1.5}
    with pytest.raises(MappingError):
        _resolve([column("V", "value", default="lots")], {})
