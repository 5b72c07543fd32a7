"""The comparisons behind proof of landing: tallies of accepted events, aggregate queries and their
answers, day rows, and records read back field by field."""

from __future__ import annotations

from datetime import UTC, date, datetime

from klaviyo.serialization import dumps
from sync import verification as v


def _event(email: str, metric: str, when: str | None, value: float | None = 1.0) -> bytes:
    attrs: dict = {"metric": {"data": {"type": "metric", "attributes": {"name": metric}}}, "value": value}
    if when is not None:
        attrs["time"] = when
    return dumps(
        {
            "type": "event-bulk-create",
            "attributes": {
                "profile": {"data": {"type": "profile", "attributes": {"email": email}}},
                "events": {"data": [{"type": "event", "attributes": attrs}]},
            },
        }
    )


def test_tally_counts_accepted_events_per_metric_and_local_day() -> None:
    pairs = [
        (1, _event("a@shop.test", "Placed Order", "2025-03-01T15:00:00Z", 10)),
        (2, _event("b@shop.test", "Placed Order", "2025-03-02T03:00:00Z", 5)),  # the 1st in New York
        (3, _event("c@shop.test", "Placed Order", "2025-03-02T15:00:00Z", 7)),  # refused by Klaviyo
        (4, _event("d@example.com", "Placed Order", "2025-03-02T15:00:00Z", 7)),  # accepted, never kept
        (5, _event("e@shop.test", "Ordered Product", "2025-03-02T15:00:00Z", None)),
        (5, _event("e@shop.test", "Ordered Product", "2025-03-02T16:00:00Z", 2.5)),
    ]
    tally = v.tally_events(pairs, [1, 2, 4, 5, 5], "America/New_York")
    assert tally == {
        "tz": "America/New_York",
        "days": {
            "Placed Order": {"2025-03-01": [2, 15.0]},
            "Ordered Product": {"2025-03-02": [2, 2.5]},
        },
    }


def test_an_event_without_a_time_counts_on_the_day_it_was_sent() -> None:
    now = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)
    tally = v.tally_events([(1, _event("a@shop.test", "Viewed", None))], [1], "America/Los_Angeles", now=now)
    assert tally["days"] == {"Viewed": {"2025-05-31": [1, 1.0]}}
    # An unknown zone name falls back to UTC rather than failing the run.
    assert (
        v.tally_events([(1, _event("a@shop.test", "Viewed", None))], [1], "Nowhere/Else", now=now)["tz"]
        == "UTC"
    )


def test_batch_tallies_merge_per_zone_metric_and_day() -> None:
    first = {"tz": "UTC", "days": {"M": {"2025-01-01": [2, 3.0]}}}
    second = {"tz": "UTC", "days": {"M": {"2025-01-01": [1, 1.5], "2025-01-02": [4, 4.0]}}}
    assert v.merge_tallies([first, None, second]) == {
        "UTC": {"M": {"2025-01-01": [3, 4.5], "2025-01-02": [4, 4.0]}}
    }


def test_queries_cover_the_days_sent_a_year_at_most_each() -> None:
    days = ["2023-01-05", "2023-06-01", "2024-01-04", "2024-01-05", "2025-02-01"]
    queries = v.aggregate_queries("M1", days, "Europe/Oslo")
    ranges = [q["data"]["attributes"]["filter"] for q in queries]
    assert ranges == [
        ["greater-or-equal(datetime,2023-01-05T00:00:00)", "less-than(datetime,2024-01-05T00:00:00)"],
        ["greater-or-equal(datetime,2024-01-05T00:00:00)", "less-than(datetime,2024-01-06T00:00:00)"],
        ["greater-or-equal(datetime,2025-02-01T00:00:00)", "less-than(datetime,2025-02-02T00:00:00)"],
    ]
    for query in queries:
        first, last = (
            date.fromisoformat(f.split(",")[1][:10]) for f in query["data"]["attributes"]["filter"]
        )
        assert (last - first).days <= 365
        assert query["data"]["attributes"]["timezone"] == "Europe/Oslo"
        assert query["data"]["attributes"]["measurements"] == ["count", "sum_value"]


def test_an_answer_reads_as_counts_and_sums_by_local_day() -> None:
    answer = {
        "dates": ["2025-03-01T00:00:00-05:00", "2025-03-02T00:00:00-05:00"],
        "data": [{"dimensions": [], "measurements": {"count": [3.0, 0.0], "sum_value": [6.5, 0.0]}}],
    }
    assert v.read_aggregate(answer) == {"2025-03-01": [3, 6.5], "2025-03-02": [0, 0.0]}


def test_only_days_where_klaviyo_holds_less_are_short() -> None:
    sent = {"M": {"2025-01-01": [3, 6.0], "2025-01-02": [2, 4.0], "2025-01-03": [1, 9.0]}}
    held = {"M": {"2025-01-01": [5, 10.0], "2025-01-02": [1, 2.0], "2025-01-03": [1, 1.0]}}
    rows = v.compare_days(sent, held)
    assert [(r.day, r.short) for r in rows] == [
        ("2025-01-01", False),
        ("2025-01-02", True),
        ("2025-01-03", True),
    ]
    assert rows[0].to_dict()["difference"] == 2  # more than sent: other sources, not flagged
    assert v.verdict(0, settled=False) == v.VERIFIED
    assert v.verdict(2, settled=False) == v.PENDING
    assert v.verdict(2, settled=True) == v.MISMATCH


def test_records_compare_field_by_field_as_klaviyo_keeps_them() -> None:
    sent = v.flatten_profile(
        {
            "email": "Ann@Shop.test",
            "first_name": "Ann",
            "location": {"city": "Oslo"},
            "properties": {"Tier": 2},
        }
    )
    held = v.flatten_profile(
        {
            "email": "ann@shop.test",
            "first_name": "Anne",
            "location": {"city": "Oslo", "zip": None},
            "properties": {"Tier": 2.0},
            "created": "2025-01-01",
        }
    )
    found = v.compare_record(7, "ann@shop.test", sent, held)
    assert [(d.field, d.sent, d.held) for d in found] == [("first_name", "Ann", "Anne")]
    assert [d.field for d in v.compare_record(8, "x", sent, None)] == ["(record)"]
    result = v.SampleResult()
    for _ in range(97):
        result.add([])
    result.add(found)
    result.add(found)
    result.add(v.compare_record(8, "x", sent, None))
    assert result.headline() == "97 of 100 match; 3 differ (1 not found in Klaviyo)."
    assert result.to_dict()["differences_total"] == 3
