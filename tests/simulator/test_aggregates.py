"""Query Metric Aggregates in the simulator: counts and sums by day in the asked time zone, requests
checked like Klaviyo's (SDK model, time range, measurements), its own small rate class, events that
become visible only after processing, and the fault that loses accepted events."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from simulator.server import SimulatorServer
from tests.simulator.payloads import bulk, event_item

BULK = "/api/event-bulk-create-jobs"
AGG = "/api/metric-aggregates"


def _query(metric_id: str, start: str, end: str, tz: str = "UTC", **attrs: Any) -> dict[str, Any]:
    return {
        "data": {
            "type": "metric-aggregate",
            "attributes": {
                "metric_id": metric_id,
                "measurements": ["count", "sum_value"],
                "interval": "day",
                "filter": [f"greater-or-equal(datetime,{start})", f"less-than(datetime,{end})"],
                "timezone": tz,
                **attrs,
            },
        }
    }


def _send(client: httpx.Client, times_values: list[tuple[str, float]], metric: str = "Placed Order") -> str:
    items = [
        event_item(f"a{n}@shop.io", metric, time=t, value=v, unique_id=f"u{n}")
        for n, (t, v) in enumerate(times_values)
    ]
    assert client.post(BULK, json=bulk(items)).status_code == 202
    metrics = client.get("/api/metrics").json()["data"]
    return next(m["id"] for m in metrics if m["attributes"]["name"] == metric)


@pytest.fixture(autouse=True)
def _visible(sim: SimulatorServer) -> None:
    sim.config.events_visible_seconds = 0


def test_counts_and_sums_by_day_in_the_asked_time_zone(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.limits_enabled = False
    metric_id = _send(
        client,
        [("2024-03-01T15:00:00Z", 10.0), ("2024-03-01T16:00:00Z", 2.5), ("2024-03-02T03:00:00Z", 4.0)],
    )
    utc = client.post(AGG, json=_query(metric_id, "2024-03-01T00:00:00", "2024-03-03T00:00:00"))
    assert utc.status_code == 200, utc.text
    attrs = utc.json()["data"]["attributes"]
    assert attrs["dates"] == ["2024-03-01T00:00:00+00:00", "2024-03-02T00:00:00+00:00"]
    assert attrs["data"] == [{"dimensions": [], "measurements": {"count": [2, 1], "sum_value": [12.5, 4.0]}}]
    # 03:00 UTC on the 2nd is the evening of the 1st in New York.
    ny = client.post(
        AGG, json=_query(metric_id, "2024-03-01T00:00:00", "2024-03-03T00:00:00", "America/New_York")
    )
    attrs = ny.json()["data"]["attributes"]
    assert attrs["dates"] == ["2024-03-01T00:00:00-05:00", "2024-03-02T00:00:00-05:00"]
    assert attrs["data"][0]["measurements"] == {"count": [3, 0], "sum_value": [16.5, 0.0]}


@pytest.mark.parametrize(
    ("change", "status", "detail"),
    [
        ({"metric_id": 5}, 400, "metric_id"),  # the SDK model's type check
        ({"measurements": ["median"]}, 400, "must be one of"),  # the SDK model's enum
        ({"filter": ["greater-or-equal(datetime,2024-03-01T00:00:00)"]}, 400, "must give a time range"),
        (
            {
                "filter": [
                    "greater-or-equal(datetime,2022-01-01T00:00:00)",
                    "less-than(datetime,2024-01-01T00:00:00)",
                ]
            },
            400,
            "at most one year",
        ),
        ({"timezone": "Mars/Olympus"}, 400, "Unknown timezone"),
        ({"interval": "minute"}, 400, "must be one of"),
        ({"metric_id": "NOPE00"}, 404, "does not exist"),
        ({"colour": "red"}, 400, "not a valid field"),
    ],
)
def test_bad_queries_are_refused_with_a_reason(
    sim: SimulatorServer, client: httpx.Client, change: dict[str, Any], status: int, detail: str
) -> None:
    sim.config.limits_enabled = False
    metric_id = _send(client, [("2024-03-01T15:00:00Z", 1.0)])
    query = _query(metric_id, "2024-03-01T00:00:00", "2024-03-02T00:00:00")
    query["data"]["attributes"].update(change)
    answer = client.post(AGG, json=query)
    assert answer.status_code == status, answer.text
    assert detail in answer.text


def test_its_own_small_rate_class(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.limits_enabled = False
    metric_id = _send(client, [("2024-03-01T15:00:00Z", 1.0)])
    sim.config.limits_enabled = True
    query = _query(metric_id, "2024-03-01T00:00:00", "2024-03-02T00:00:00")
    answers = [client.post(AGG, json=query) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["RateLimit-Limit"].startswith("60")
    assert "Retry-After" in answers[3].headers


def test_accepted_events_count_only_once_klaviyo_has_processed_them(
    sim: SimulatorServer, client: httpx.Client
) -> None:
    sim.config.limits_enabled = False
    sim.config.time_scale = 10
    sim.config.events_visible_seconds = 3.0  # 0.3 s real
    metric_id = _send(client, [("2024-03-01T15:00:00Z", 1.0), ("2024-03-01T16:00:00Z", 1.0)])
    query = _query(metric_id, "2024-03-01T00:00:00", "2024-03-02T00:00:00")
    early = client.post(AGG, json=query).json()["data"]["attributes"]["data"][0]["measurements"]
    assert early["count"] == [0]
    time.sleep(0.4)
    later = client.post(AGG, json=query).json()["data"]["attributes"]["data"][0]["measurements"]
    assert later["count"] == [2]


def test_the_drop_fault_loses_accepted_events_on_the_chosen_days(
    sim: SimulatorServer, client: httpx.Client
) -> None:
    sim.config.limits_enabled = False
    sim.config.update({"faults": {"drop_events_share": 1.0, "drop_events_days": ["2024-03-02"]}})
    metric_id = _send(
        client,
        [("2024-03-01T15:00:00Z", 1.0), ("2024-03-02T15:00:00Z", 1.0), ("2024-03-02T16:00:00Z", 1.0)],
    )
    query = _query(metric_id, "2024-03-01T00:00:00", "2024-03-03T00:00:00")
    measured = client.post(AGG, json=query).json()["data"]["attributes"]["data"][0]["measurements"]
    assert measured["count"] == [1, 0]
    assert len(sim.state.events(metric="Placed Order")) == 1
    assert sim.state.snapshot_stats()["faults"]["event_dropped"] == 2
