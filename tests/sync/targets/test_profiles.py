"""Profile items: unchanged vs cleared fields, external_id length, invalid phone handling, SDK validation."""

from __future__ import annotations

from typing import Any

from sync.mapping import Mapping, MappingOptions, Target, TargetKind, column
from sync.pipeline import run_pipeline
from tests.sync.envelopes import profiles_job


def _mapping(**options: Any) -> Mapping:
    return Mapping(
        name="p",
        target=Target(kind=TargetKind.PROFILE),
        options=MappingOptions(**options),
        fields=[
            column("Email", "email"),
            column("Phone", "phone_number"),
            column("Customer", "external_id"),
            column("First", "first_name"),
            column("City", "location.city"),
            column("Tier", "properties.Tier"),
        ],
    )


ROW = {
    "Email": "Ann@Shop.io",
    "Phone": "(415) 555-2671",
    "Customer": "c-1",
    "First": "Ann",
    "City": "Oslo",
    "Tier": "",
}


def _run(row: dict[str, str], **options: Any) -> Any:
    (result,) = list(run_pipeline(_mapping(**options), [(1, row)]))
    return result


def test_empty_cells_leave_fields_unchanged() -> None:
    result = _run(ROW | {"First": ""})
    assert result.ok
    assert result.items == [
        {
            "type": "profile",
            "attributes": {
                "email": "ann@shop.io",
                "phone_number": "+14155552671",
                "external_id": "c-1",
                "location": {"city": "Oslo"},
            },
        }
    ]
    profiles_job(result.items, list_id="Y6nRLr")


def test_clear_option_sends_null_but_never_for_identifiers() -> None:
    result = _run(ROW | {"First": "", "Customer": ""}, clear_empty=True)
    attrs = result.items[0]["attributes"]
    assert attrs["first_name"] is None
    assert attrs["properties"] == {"Tier": None}
    assert "external_id" not in attrs
    profiles_job(result.items)


def test_missing_column_is_not_cleared_even_with_clear_option() -> None:
    row = {k: v for k, v in ROW.items() if k != "First"}
    assert "first_name" not in _run(row, clear_empty=True).items[0]["attributes"]


def test_external_id_over_64_chars_is_rejected() -> None:
    result = _run(ROW | {"Customer": "x" * 65})
    assert result.items == []
    assert [(e.rule, e.column) for e in result.errors] == [("external_id_too_long", "external_id")]
    assert _run(ROW | {"Customer": "x" * 64}).ok


def test_invalid_phone_rejects_row_by_default() -> None:
    result = _run(ROW | {"Phone": "12345"})
    assert [e.rule for e in result.errors] == ["invalid_phone"]
    assert result.items == []


def test_invalid_phone_dropped_with_warning_when_asked() -> None:
    result = _run(ROW | {"Phone": "12345"}, drop_invalid_phone=True)
    assert result.ok
    assert "phone_number" not in result.items[0]["attributes"]
    assert [w.rule for w in result.warnings] == ["phone_dropped"]


def test_profile_without_identifier() -> None:
    result = _run({"First": "Ann"})
    assert [e.rule for e in result.errors] == ["missing_profile_identifier"]


def test_a_dropped_phone_that_was_the_only_identifier_is_the_reason_the_row_fails() -> None:
    result = _run({**ROW, "Email": "", "Customer": "", "Phone": "12345"}, drop_invalid_phone=True)
    assert [(e.rule, e.message) for e in result.errors] == [
        ("invalid_phone", '"12345" is not a valid phone number for region US')
    ]
    assert result.warnings == []
