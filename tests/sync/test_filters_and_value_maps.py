"""Row filters, consent skips and value maps in the pipeline and the dry run."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sync.mapping import Mapping, MapValues, Target, TargetKind, column
from sync.pipeline import dry_run, run_pipeline
from sync.row_filters import RowFilter
from tests.sync.test_consent_skip import ROWS
from tests.sync.test_consent_skip import subscription as base_subscription


def subscription(*filters: RowFilter) -> Mapping:
    return base_subscription().model_copy(update={"filters": list(filters)})


@pytest.mark.parametrize(
    ("spec", "kept"),
    [
        (RowFilter(column="Accepts Marketing", op="truthy"), [1, 4]),
        (RowFilter(column="Tier", op="equals", value="GOLD "), [1, 4]),
        (RowFilter(column="Tier", op="not_equals", value="gold"), [2, 3]),
        (RowFilter(column="Tier", op="one_of", values=["silver", "bronze"]), [2]),
        (RowFilter(column="Tier", op="empty"), [3]),
        (RowFilter(column="Tier", op="not_empty"), [1, 2, 4]),
    ],
)
def test_filters_keep_only_matching_rows_and_count_the_rest_as_skipped(spec, kept):
    mapping = Mapping(
        name="Profiles",
        target=Target(kind=TargetKind.PROFILE),
        fields=[column("Email", "email")],
        filters=[spec],
    )
    results = list(run_pipeline(mapping, ROWS))
    assert [r.row_ref for r in results if r.ok] == kept
    dropped = [r for r in results if not r.ok]
    assert all(r.skipped and not r.errors and r.skip and r.skip.rule == "skipped_filter" for r in dropped)
    summary = dry_run(mapping, ROWS)
    assert summary.rows_skipped == 4 - len(kept) and summary.rows_rejected == 0
    if dropped:
        assert summary.skips["skipped_filter"].message.startswith("skipped by filter: ")


def test_filters_need_their_values():
    with pytest.raises(ValidationError, match="needs a value"):
        RowFilter(column="Tier", op="equals")
    with pytest.raises(ValidationError, match="at least one value"):
        RowFilter(column="Tier", op="one_of")


def test_consent_filter_with_truthy_sends_only_the_yes_rows():
    mapping = subscription(RowFilter(column="Accepts Marketing", op="truthy"))
    summary = dry_run(mapping, ROWS)
    assert (summary.rows_ok, summary.rows_skipped, summary.rows_rejected) == (2, 2, 0)
    assert set(summary.skips) == {"skipped_filter"}


def test_value_maps_listed_values_presets_and_defaults():
    mapping = Mapping(
        name="Profiles",
        target=Target(kind=TargetKind.PROFILE),
        fields=[
            column("Email", "email"),
            column(
                "Country", "location.country", MapValues(values={"Atlantis": "ZZ"}, preset="country_code")
            ),
            column("Tier", "properties.tier", MapValues(values={"gold": 3, "silver": 2}, default=1)),
            column("Accepts Marketing", "properties.opted_in", MapValues(preset="yes_no", default=False)),
        ],
    )
    results = list(run_pipeline(mapping, ROWS))
    assert all(r.ok for r in results), [r.errors for r in results]
    attrs = [r.items[0]["attributes"] for r in results]
    assert [a["location"]["country"] for a in attrs] == ["GB", "DE", "US", "ZZ"]
    assert [a.get("properties", {}).get("tier") for a in attrs] == [3, 2, None, 3]
    assert [a.get("properties", {}).get("opted_in") for a in attrs] == [True, False, None, True]


def test_an_unlisted_value_without_default_is_refused_when_not_kept():
    mapping = Mapping(
        name="Profiles",
        target=Target(kind=TargetKind.PROFILE),
        fields=[
            column("Email", "email"),
            column("Tier", "properties.tier", MapValues(values={"gold": 3}, keep_unlisted=False)),
        ],
    )
    results = list(run_pipeline(mapping, ROWS))
    assert results[0].ok and results[1].errors[0].rule == "unmapped_value"
    assert "'silver' is not one of the mapped values" in results[1].errors[0].message


def test_mapping_json_round_trips_filters_and_value_maps():
    mapping = subscription(RowFilter(column="Accepts Marketing", op="one_of", values=["yes", "y"]))
    assert Mapping.from_json(mapping.to_json()) == mapping
