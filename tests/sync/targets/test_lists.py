"""List membership items."""

from __future__ import annotations

from sync.mapping import Mapping, Target, TargetKind, column
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
