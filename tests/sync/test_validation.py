"""Row checks on event items and mapping-level checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sync.issues import Issue
from sync.mapping import FieldRule, Mapping, PathSource, Target, TargetKind, column
from sync.targets.events import event_item
from sync.validation import EventChecks, check_mapping, check_new_metrics

NOW = datetime(2026, 11, 24, tzinfo=UTC)


def _check(profile: dict[str, Any] | None = None, **event: Any) -> tuple[list[Issue], list[Issue]]:
    properties = event.pop("properties", {})
    item = event_item(
        "M", profile if profile is not None else {"email": "a@b.io"}, properties, backfill=True, **event
    )
    errors: list[Issue] = []
    warnings: list[Issue] = []
    EventChecks(NOW).check(item, errors, warnings)
    return errors, warnings


def _rules(issues: list[Issue]) -> list[str]:
    return [issue.rule for issue in issues]


def test_clean_event() -> None:
    assert _check(time="2024-01-01T00:00:00+00:00", value=5, properties={"A": "b"}) == ([], [])


def test_missing_profile_identifier() -> None:
    assert _rules(_check({"first_name": "Ann"})[0]) == ["missing_profile_identifier"]
    assert _check({"external_id": "c-1"})[0] == []


def test_value_not_numeric() -> None:
    assert _rules(_check(value="12")[0]) == ["value_not_numeric"]
    assert _rules(_check(value=True)[0]) == ["value_not_numeric"]


def test_time_window() -> None:
    assert _rules(_check(time="1989-12-31T23:59:59+00:00")[0]) == ["time_out_of_range"]
    assert _rules(_check(time="2027-12-01T00:00:00+00:00")[0]) == ["time_out_of_range"]
    assert _check(time="2027-11-01T00:00:00+00:00")[0] == []
    assert _check(time="1990-01-01T00:00:00+00:00")[0] == []


def test_string_over_100_kb_including_nested_and_multibyte() -> None:
    assert _rules(_check(properties={"Body": "x" * (100 * 1024 + 1)})[0]) == ["string_too_long"]
    assert _check(properties={"Body": "x" * (100 * 1024)})[0] == []
    assert _rules(_check(properties={"Body": "é" * 60_000})[0]) == ["string_too_long"]  # 120 KB of UTF-8
    assert "string_too_long" in _rules(_check(properties={"Items": [{"Note": "y" * 200_000}]})[0])


def test_too_many_properties() -> None:
    errors, _ = _check(properties={f"p{i}": i for i in range(401)})
    assert _rules(errors) == ["too_many_properties"]
    assert _check(properties={f"p{i}": i for i in range(400)})[0] == []


def test_nested_objects_warn_except_items() -> None:
    _, warnings = _check(
        properties={"Address": {"City": "Oslo"}, "Items": [{"SKU": "a"}], "Tags": ["a", "b"]}
    )
    assert _rules(warnings) == ["nested_property"]
    assert warnings[0].column == "Address"


def _mapping(*targets: str, kind: TargetKind = TargetKind.EVENT) -> Mapping:
    return Mapping(
        name="m",
        target=Target(kind=kind, metric="M" if kind is TargetKind.EVENT else None),
        fields=[FieldRule(source=PathSource(path=f"c{i}"), target=t) for i, t in enumerate(targets)],
    )


def test_external_id_only_warns_about_duplicates() -> None:
    issues = check_mapping(_mapping("external_id", "properties.A"))
    assert _rules(issues) == ["external_id_only"]
    assert "duplicate" in issues[0].message
    assert check_mapping(_mapping("external_id", "email")) == []
    assert _rules(check_mapping(_mapping("external_id", kind=TargetKind.PROFILE))) == ["external_id_only"]
    assert _rules(check_mapping(_mapping("profile.external_id", "properties.A"))) == ["external_id_only"]
    assert _rules(check_mapping(_mapping("properties.A"))) == ["no_profile_identifier"]


def test_property_name_clash_with_profile_property() -> None:
    mapping = _mapping("email", "properties.first_name", "properties.Tier", "profile.properties.Tier")
    issues = check_mapping(mapping)
    assert [(i.rule, i.column) for i in issues] == [
        ("property_name_clash", "first_name"),
        ("property_name_clash", "Tier"),
    ]
    assert "segment builder" in issues[0].message
    assert _rules(check_mapping(_mapping("email", "properties.Vip"), profile_property_names=["VIP"])) == [
        "property_name_clash"
    ]


def test_nested_target_warns_at_mapping_level() -> None:
    assert _rules(check_mapping(_mapping("email", "properties.Billing.City", "properties.Billing.Zip"))) == [
        "nested_property"
    ]


def test_metric_limit() -> None:
    existing = [f"Metric {i}" for i in range(150)]
    assert check_new_metrics(["Metric 1"], existing) == ([], [])
    assert check_new_metrics(["New"], existing) == (["New"], [])
    near = [f"Metric {i}" for i in range(185)]
    new, issues = check_new_metrics(["New", "New"], near)
    assert new == ["New"] and _rules(issues) == ["metric_limit_near"]
    full = [f"Metric {i}" for i in range(200)]
    assert _rules(check_new_metrics(["New"], full)[1]) == ["metric_limit"]
    assert check_new_metrics(["Metric 3"], full) == ([], [])


def test_catalog_mapping_has_no_identity_checks() -> None:
    assert (
        check_mapping(
            Mapping(name="x", target=Target(kind=TargetKind.CATALOG_ITEM), fields=[column("a", "title")])
        )
        == []
    )


def test_identity_ledger_flags_rows_naming_another_rows_profile() -> None:
    from sync.validation import IdentityLedger

    ledger = IdentityLedger()
    found: dict[int, list[str]] = {}

    def check(row: int, **attrs: str) -> None:
        warnings: list[Issue] = []
        ledger.check({"type": "profile", "attributes": attrs}, row, warnings)
        found[row] = [w.rule for w in warnings]

    check(1, email="Ann@Shop.test", phone_number="+4791234567", external_id="C1")
    check(2, email=" ann@shop.TEST ")  # the same email, whatever its case and spaces
    check(3, email="ann@shop.test", phone_number="+4791234567")  # Ann again: one note, not two
    check(4, email="bo@shop.test", external_id="C1")  # Ann's customer id on another person
    check(5, phone_number="+4791234567")  # Ann's phone, no email: it updates her profile
    check(6, email="cy@shop.test", phone_number="+4790000000")
    assert found == {
        1: [],
        2: ["duplicate_email"],
        3: ["duplicate_email"],
        4: ["duplicate_external_id"],
        5: ["duplicate_phone"],
        6: [],
    }
