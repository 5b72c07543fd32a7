"""A row that grants no consent is skipped ("skipped: no consent given"), never an error."""

from __future__ import annotations

from sync.mapping import BooleanCast, Mapping, MappingOptions, Target, TargetKind, column
from sync.pipeline import dry_run, run_pipeline

ROWS = [
    (1, {"Email": "ada@shop.test", "Accepts Marketing": "yes", "Country": "United Kingdom", "Tier": "gold"}),
    (2, {"Email": "alan@shop.test", "Accepts Marketing": "no", "Country": "Germany", "Tier": "silver"}),
    (3, {"Email": "grace@shop.test", "Accepts Marketing": "", "Country": "US", "Tier": ""}),
    (4, {"Email": "edsger@shop.test", "Accepts Marketing": "Y", "Country": "Atlantis", "Tier": "Gold"}),
]


def subscription() -> Mapping:
    return Mapping(
        name="Consent",
        target=Target(kind=TargetKind.SUBSCRIPTION),
        options=MappingOptions(channels=["email"]),
        fields=[column("Email", "email"), column("Accepts Marketing", "consent.email", BooleanCast())],
    )


def test_a_no_consent_row_is_skipped_not_failed():
    results = list(run_pipeline(subscription(), ROWS))
    assert [r.ok for r in results] == [True, False, False, True]
    assert [r.errors for r in results] == [[], [], [], []]
    for result in results[1:3]:
        assert result.skipped
        assert result.skip is not None and result.skip.message == "skipped: no consent given"
    summary = dry_run(subscription(), ROWS)
    assert (summary.rows_ok, summary.rows_rejected, summary.rows_skipped) == (2, 0, 2)
    assert not summary.errors
    assert summary.as_dict()["skips"] == [
        {
            "rule": "skipped_no_consent",
            "count": 2,
            "events": 2,
            "message": "skipped: no consent given",
            "column": "Accepts Marketing",
            "examples": [2, 3],
        }
    ]


def test_a_row_without_any_address_is_still_an_error():
    rows = [(1, {"Email": "", "Accepts Marketing": "yes"})]
    (result,) = run_pipeline(subscription(), rows)
    assert not result.skipped and result.errors[0].rule == "no_consent_channel"
