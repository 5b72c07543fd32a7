"""A mapping checked against a feed's records: required fields refuse, optional ones warn."""

from __future__ import annotations

from sync.feed_check import check_records, record_fields
from sync.mapping import FieldRule, Mapping, MappingOptions, PathSource, Target, TargetKind, column

RECORDS = [
    {"order_id": "A1", "email": "a@shop.test", "total": "9", "lines": [{"sku": "S1", "qty": 1}]},
    {"order_id": "A2", "email": "b@shop.test", "total": "5", "lines": [{"sku": "S2"}]},
]


def orders(*extra: FieldRule, time_column: str = "created_at") -> Mapping:
    return Mapping(
        name="orders",
        target=Target(kind=TargetKind.ORDER),
        options=MappingOptions(line_items_path="lines"),
        fields=[
            column("order_id", "properties.OrderId"),
            column("email", "email"),
            column(time_column, "time"),
            FieldRule(source=PathSource(path="line.sku"), target="item.SKU"),
            *extra,
        ],
    )


def test_an_order_feed_without_time_is_refused_unless_received_time_is_chosen():
    fit = check_records(orders(), RECORDS)
    assert not fit.ok
    assert fit.errors == ["the time of each event (time) reads 'created_at', which no record has"]
    chosen = check_records(orders(), RECORDS, received_time=True)
    assert chosen.ok and chosen.errors == []


def test_optional_fields_missing_are_warnings_and_fields_are_listed():
    extra = FieldRule(source=PathSource(path="line.price"), target="item.ItemPrice")
    fit = check_records(orders(extra, time_column="total"), RECORDS)
    assert fit.ok
    assert fit.warnings == ["item.ItemPrice: no record has 'line.price'; it is left out"]
    assert record_fields(RECORDS) == ["order_id", "email", "total", "lines[0].sku", "lines[0].qty"]


def test_missing_identifier_and_lines_are_refused():
    records = [{"order_id": "A1", "created_at": "2026-01-01T00:00:00Z"}]
    fit = check_records(orders(), records)
    assert any("profile identifier" in e for e in fit.errors)
    assert any("no record has order lines at 'lines'" in e for e in fit.errors)


def test_a_required_profile_field_missing_is_refused():
    mapping = Mapping(
        name="p",
        target=Target(kind=TargetKind.PROFILE),
        fields=[column("email", "email"), column("tier", "properties.tier", required=True)],
    )
    fit = check_records(mapping, RECORDS)
    assert fit.errors == ["properties.tier is marked required but no record has 'tier'"]


def test_an_event_mapping_without_a_time_field_needs_the_received_time_choice():
    mapping = Mapping(
        name="events",
        target=Target(kind=TargetKind.EVENT, metric="Viewed"),
        fields=[column("email", "email")],
    )
    assert check_records(mapping, RECORDS).errors == [
        "the mapping has no field for the time of each event (time)"
    ]
    assert check_records(mapping, RECORDS, received_time=True).ok


def test_a_path_with_alternatives_is_present_when_any_alternative_is():
    """Spec records carry `timestamp`, `originalTimestamp` or `sentAt`: the preset reads the first
    present one, so the check must not call `timestamp | originalTimestamp | sentAt` missing."""
    spec = orders()
    spec.fields[2] = FieldRule(
        source=PathSource(path="timestamp | originalTimestamp | sentAt"), target="time"
    )
    stamped = [{**RECORDS[0], "originalTimestamp": "2026-01-01T10:00:00Z"}, RECORDS[1]]
    assert check_records(spec, stamped).ok
    assert not check_records(spec, RECORDS).ok
