"""Query Metric Aggregates (POST /api/metric-aggregates) and the lag before stored events count there.

Klaviyo processes event bulk jobs asynchronously: an event accepted with a 202 shows in aggregates
only some time later (``SimConfig.events_visible_seconds``, simulated seconds). The fault
``drop_events_share`` (optionally only on ``drop_events_days``, dates in the account's time zone)
loses accepted events inside the simulator, as a destination that silently keeps less would.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from openapi_client import models as sdk

from simulator import faults
from simulator.common import Request, Response
from simulator.state import new_uuid
from simulator.validation import MODELS, Problem, error, invalid, parse_time, validate_shape

MODELS.setdefault("metric_aggregate", sdk.MetricAggregateQuery)
MEASUREMENTS = {"count", "sum_value", "unique"}
INTERVALS = {"hour", "day", "week", "month"}
MAX_RANGE = timedelta(days=366)  # Klaviyo answers at most a year per query
_FILTER = re.compile(r"^(greater-or-equal|greater-than|less-than|less-or-equal)\(datetime,\s*([^)]+)\)$")
_ATTRS = "/data/attributes"


def event_dropped(req: Request, ev: dict[str, Any]) -> bool:
    """Whether the drop fault loses this accepted event (checked before it is stored)."""
    config = req.config
    if config is None or config.faults.drop_events_share <= 0:
        return False
    days = config.faults.drop_events_days
    if days:
        when = parse_time(ev["time"]) if ev.get("time") else datetime.now(UTC)
        zone = _zone((req.account.timezone if req.account else None) or "UTC")
        if when is None or when.astimezone(zone).date().isoformat() not in days:
            return False
    if not faults.roll(config, config.faults.drop_events_share):
        return False
    assert req.state is not None
    req.state.stats.faults["event_dropped"] += 1
    return True


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Problem(400, [invalid(f"Unknown timezone '{name}'", f"{_ATTRS}/timezone")]) from None


def _bounds(filters: list[str], zone: ZoneInfo) -> tuple[datetime, datetime]:
    start = end = None
    for text in filters:
        found = _FILTER.match(text.strip())
        if found is None:
            raise Problem(400, [invalid(f"Unsupported filter '{text}'", f"{_ATTRS}/filter")])
        op, raw = found.groups()
        when = _instant(raw.strip().strip("'\""), zone)
        if op.startswith("greater"):
            start = when + (timedelta(microseconds=1) if op == "greater-than" else timedelta())
        else:
            end = when + (timedelta(microseconds=1) if op == "less-or-equal" else timedelta())
    if start is None or end is None:
        detail = (
            "The filter must give a time range: greater-or-equal(datetime,...) and less-than(datetime,...)"
        )
        raise Problem(400, [invalid(detail, f"{_ATTRS}/filter")])
    if end <= start:
        raise Problem(400, [invalid("The time range is empty", f"{_ATTRS}/filter")])
    if end - start > MAX_RANGE:
        raise Problem(400, [invalid("The time range must be at most one year", f"{_ATTRS}/filter")])
    return start, end


def _instant(raw: str, zone: ZoneInfo) -> datetime:
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise Problem(400, [invalid(f"Invalid datetime '{raw}'", f"{_ATTRS}/filter")]) from None
    # A time without an offset is read in the query's time zone, as Klaviyo's reference shows it.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone)


def _starts(start: datetime, end: datetime, interval: str, zone: ZoneInfo) -> list[datetime]:
    """Interval starts (local time) covering [start, end)."""
    local = start.astimezone(zone)
    if interval == "hour":
        first = local.replace(minute=0, second=0, microsecond=0)
    elif interval == "day":
        first = local.replace(hour=0, minute=0, second=0, microsecond=0)
    elif interval == "week":
        day = local.replace(hour=0, minute=0, second=0, microsecond=0)
        first = day - timedelta(days=day.weekday())
    else:
        first = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    out = []
    current = first
    while current < end:
        out.append(current)
        current = _next(current, interval, zone)
    return out


def _next(current: datetime, interval: str, zone: ZoneInfo) -> datetime:
    naive = current.replace(tzinfo=None)
    if interval == "hour":
        return (current.astimezone(UTC) + timedelta(hours=1)).astimezone(zone)
    if interval == "day":
        naive += timedelta(days=1)
    elif interval == "week":
        naive += timedelta(days=7)
    else:
        naive = (naive.replace(day=28) + timedelta(days=4)).replace(day=1)
    return naive.replace(tzinfo=zone)


def query_metric_aggregates(req: Request) -> Response:
    """POST /api/metric-aggregates: count, sum_value and unique of one metric per interval."""
    body = req.body
    if body is None:
        raise Problem(400, [invalid("A JSON request body is required", "")])
    validate_shape("metric_aggregate", body)
    attrs = body["data"]["attributes"]
    assert req.acct is not None and req.config is not None
    metric = next((m for m in req.acct.metrics.values() if m["id"] == attrs["metric_id"]), None)
    if metric is None:
        raise Problem(404, [error(404, "not_found", f"Metric {attrs['metric_id']} does not exist")])
    asked = list(attrs.get("measurements") or [])
    unknown = [m for m in asked if m not in MEASUREMENTS]
    if not asked or unknown:
        detail = f"measurements must be some of {sorted(MEASUREMENTS)}; got {unknown or asked}"
        raise Problem(400, [invalid(detail, f"{_ATTRS}/measurements")])
    interval = attrs.get("interval") or "day"
    if interval not in INTERVALS:
        raise Problem(400, [invalid(f"interval must be one of {sorted(INTERVALS)}", f"{_ATTRS}/interval")])
    if attrs.get("by"):
        raise Problem(400, [invalid("'by' is not supported by the simulator", f"{_ATTRS}/by")])
    zone_name = attrs.get("timezone") or "UTC"
    if zone_name not in _ZONES:
        raise Problem(400, [invalid(f"Unknown timezone '{zone_name}'", f"{_ATTRS}/timezone")])
    zone = _zone(zone_name)
    start, end = _bounds(list(attrs.get("filter") or []), zone)
    starts = _starts(start, end, interval, zone)
    counts = [0] * len(starts)
    sums = [0.0] * len(starts)
    profiles: list[set[str]] = [set() for _ in starts]
    # Events reach aggregates only once Klaviyo has processed them.
    seen_before = time.time() - req.config.scaled(req.config.events_visible_seconds)
    bounds = [s.astimezone(UTC) for s in starts]
    for ev in req.acct.events:
        if ev["metric"] != metric["name"] or ev["received_at"] > seen_before:
            continue
        when = datetime.fromisoformat(ev["datetime"])
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if not start <= when < end:
            continue
        slot = _slot(bounds, when)
        counts[slot] += 1
        sums[slot] += float(ev.get("value") or 0)
        profiles[slot].add(ev["profile_id"])
    values = {"count": counts, "sum_value": [round(s, 6) for s in sums], "unique": [len(p) for p in profiles]}
    url = f"{req.base_url}/api/metric-aggregates"
    doc = {
        "data": {
            "type": "metric-aggregate",
            "id": new_uuid(),
            "attributes": {
                "dates": [s.isoformat() for s in starts],
                "data": [{"dimensions": [], "measurements": {m: values[m] for m in asked}}],
            },
            "links": {"self": url},
        },
        "links": {"self": url},
    }
    return Response(200, doc)


def _slot(bounds: list[datetime], when: datetime) -> int:
    lo, hi = 0, len(bounds) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if bounds[mid] <= when:
            lo = mid
        else:
            hi = mid - 1
    return lo


_ZONES = frozenset(available_timezones()) | {"UTC"}
