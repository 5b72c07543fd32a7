"""List membership items."""

from __future__ import annotations

from sync.mapping import Email, Mapping, MappingOptions, Phone, Target, TargetKind, column
from sync.pipeline import run_pipeline
from tests.sync.envelopes import list_members


def test_membership_items() -> None:
    mapping = Mapping(
        name="l",
        target=Target(kind=TargetKind.LIST_MEMBERSHIP, list_id="Y6nRLr"),
        fields=[column("Id", "id")],
    )
    results = list(run_pipeline(mapping, [(1, {"Id": "01HSGS1RA92Q5WX6A6ZX85N8GD"}), (2, {"Id": ""})]))
    assert results[0].items == [{"type": "profile", "id": "01HSGS1RA92Q5WX6A6ZX85N8GD"}]
    list_members(results[0].items)
    assert [e.rule for e in results[1].errors] == ["missing_profile_id"]


def test_membership_by_email_or_phone_is_normalised_for_the_lookup() -> None:
    mapping = Mapping(
        name="l",
        target=Target(kind=TargetKind.LIST_MEMBERSHIP),
        options=MappingOptions(default_phone_region="GB"),
        fields=[column("Email", "email"), column("Phone", "phone_number")],
    )
    rows = [
        (1, {"Email": " Ann@Shop.TEST ", "Phone": ""}),
        (2, {"Email": "", "Phone": "020 7946 0018"}),
        (3, {"Email": "", "Phone": "555"}),
        (4, {"Email": "not-an-address", "Phone": ""}),
        (5, {"Email": "", "Phone": ""}),
    ]
    results = list(run_pipeline(mapping, rows))
    assert results[0].items == [{"type": "profile", "attributes": {"email": "ann@shop.test"}}]
    assert results[1].items == [{"type": "profile", "attributes": {"phone_number": "+442079460018"}}]
    assert [[e.rule for e in r.errors] for r in results[2:]] == [
        ["invalid_phone"],
        ["invalid_email"],
        ["missing_profile_id"],
    ]


def test_email_and_phone_transforms_in_the_mapping_also_work() -> None:
    mapping = Mapping(
        name="l",
        target=Target(kind=TargetKind.LIST_MEMBERSHIP),
        fields=[column("Email", "email", Email()), column("Phone", "phone_number", Phone())],
    )
    results = list(run_pipeline(mapping, [(1, {"Email": "B@shop.test", "Phone": "+12025550150"})]))
    assert results[0].items == [
        {"type": "profile", "attributes": {"email": "b@shop.test", "phone_number": "+12025550150"}}
    ]
