"""Proof of landing: what a run sent, set against what Klaviyo holds afterwards.

Plain data in, plain data out. Event runs keep, while sending, a tally per metric and day (in the
account's time zone) of the events Klaviyo accepted; a check reads Query Metric Aggregates for the
same days and compares. Profile, catalog, list and subscription runs read a sample back and compare
it field by field.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from klaviyo.serialization import loads

# Klaviyo accepts these addresses and never processes them: not counted as sent-and-kept.
RESERVED_DOMAIN = "@example.com"
# Query Metric Aggregates answers at most a year per query.
MAX_DAYS_PER_QUERY = 365
VALUE_TOLERANCE = 0.005  # sums compared to the cent

VERIFIED = "verified"
PENDING = "pending"  # Klaviyo holds less, but may still be processing the run's jobs
MISMATCH = "mismatch"
CHECKING = "checking"
FAILED = "error"

Tally = dict[str, Any]  # {"tz": name, "days": {metric: {day: [count, value_sum]}}}


def zone(name: str | None) -> ZoneInfo:
    """The account's time zone, UTC when unknown or not a zone name."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _events_of(item: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    attrs = item.get("attributes") or {}
    profile = ((attrs.get("profile") or {}).get("data") or {}).get("attributes") or {}
    events = [(e or {}).get("attributes") or {} for e in (attrs.get("events") or {}).get("data") or []]
    return profile, events


def tally_events(
    pairs: Iterable[tuple[int, bytes | Mapping[str, Any]]],
    accepted: Iterable[int],
    tz_name: str | None,
    now: datetime | None = None,
) -> Tally:
    """Count and value sum per metric and local day of the accepted event items of one batch.

    ``pairs`` are (row_ref, item) in batch order; ``accepted`` the row refs Klaviyo accepted (one
    per accepted item). Items for reserved @example.com addresses are left out: Klaviyo keeps none.
    """
    tz = zone(tz_name)
    left = Counter(accepted)
    days: dict[str, dict[str, list[float]]] = {}
    sent_now = now or datetime.now(UTC)
    for ref, raw in pairs:
        if left[ref] <= 0:
            continue
        left[ref] -= 1
        item = loads(raw) if isinstance(raw, bytes | bytearray | str) else raw
        profile, events = _events_of(item)
        if str(profile.get("email") or "").strip().lower().endswith(RESERVED_DOMAIN):
            continue
        for event in events:
            metric = (((event.get("metric") or {}).get("data") or {}).get("attributes") or {}).get("name")
            if not metric:
                continue
            when = _instant(event.get("time")) or sent_now
            day = when.astimezone(tz).date().isoformat()
            slot = days.setdefault(str(metric), {}).setdefault(day, [0, 0.0])
            slot[0] += 1
            slot[1] += _number(event.get("value"))
    return {"tz": tz.key, "days": days}


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def merge_tallies(tallies: Iterable[Tally | None]) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Batch tallies summed: ``{tz: {metric: {day: [count, value_sum]}}}``."""
    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for tally in tallies:
        if not tally:
            continue
        by_metric = out.setdefault(str(tally.get("tz") or "UTC"), {})
        for metric, days in (tally.get("days") or {}).items():
            into = by_metric.setdefault(metric, {})
            for day, (count, value) in days.items():
                slot = into.setdefault(day, [0, 0.0])
                slot[0] += int(count)
                slot[1] += float(value)
    return out


def aggregate_queries(metric_id: str, days: Iterable[str], tz_name: str) -> list[dict[str, Any]]:
    """Query Metric Aggregates bodies (count and sum_value by day) covering ``days``, a year at most
    each; runs of days without events between them are not asked about."""
    wanted = sorted({date.fromisoformat(d) for d in days})
    queries: list[dict[str, Any]] = []
    start = 0
    while start < len(wanted):
        end = start
        while end + 1 < len(wanted) and (wanted[end + 1] - wanted[start]).days < MAX_DAYS_PER_QUERY:
            end += 1
        first, last = wanted[start], wanted[end] + timedelta(days=1)
        queries.append(
            {
                "data": {
                    "type": "metric-aggregate",
                    "attributes": {
                        "metric_id": metric_id,
                        "measurements": ["count", "sum_value"],
                        "interval": "day",
                        "page_size": 500,
                        # Times without an offset are read in the query's time zone.
                        "filter": [
                            f"greater-or-equal(datetime,{first.isoformat()}T00:00:00)",
                            f"less-than(datetime,{last.isoformat()}T00:00:00)",
                        ],
                        "timezone": tz_name,
                    },
                }
            }
        )
        start = end + 1
    return queries


def read_aggregate(attributes: Mapping[str, Any]) -> dict[str, list[float]]:
    """``{day: [count, value_sum]}`` from a Query Metric Aggregates answer's attributes."""
    dates = list(attributes.get("dates") or [])
    rows = list(attributes.get("data") or [])
    counts: list[Any] = []
    sums: list[Any] = []
    for row in rows:  # no "by": one row; summed anyway so a partitioned answer still adds up
        measurements = row.get("measurements") or {}
        counts = _add(counts, measurements.get("count") or [])
        sums = _add(sums, measurements.get("sum_value") or [])
    out: dict[str, list[float]] = {}
    for i, stamp in enumerate(dates):
        # Dates are the local starts of each interval: their calendar day is the day asked about.
        day = str(stamp)[:10]
        slot = out.setdefault(day, [0, 0.0])
        slot[0] += int(counts[i]) if i < len(counts) else 0
        slot[1] += _number(sums[i]) if i < len(sums) else 0.0
    return out


def _add(into: list[Any], values: list[Any]) -> list[Any]:
    if not into:
        return list(values)
    return [_number(a) + _number(b) for a, b in zip(into, values, strict=False)]


@dataclass(frozen=True)
class DayRow:
    """One metric and day: what the run had accepted, and what Klaviyo holds (at least the run's)."""

    metric: str
    day: str
    sent: int
    sent_value: float
    held: int
    held_value: float

    @property
    def short(self) -> bool:
        """Klaviyo holds fewer events, or a smaller value sum, than the run sent that day."""
        return self.held < self.sent or self.held_value < self.sent_value - VALUE_TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the differences (negative = Klaviyo holds less)."""
        return {
            "metric": self.metric,
            "day": self.day,
            "sent": self.sent,
            "sent_value": round(self.sent_value, 2),
            "held": self.held,
            "held_value": round(self.held_value, 2),
            "difference": self.held - self.sent,
            "value_difference": round(self.held_value - self.sent_value, 2),
            "short": self.short,
        }


def compare_days(
    sent: Mapping[str, Mapping[str, list[float]]], held: Mapping[str, Mapping[str, list[float]]]
) -> list[DayRow]:
    """Day rows for every metric and day the run sent, in metric then day order."""
    rows = []
    for metric in sorted(sent):
        seen = held.get(metric) or {}
        for day in sorted(sent[metric]):
            count, value = sent[metric][day]
            got = seen.get(day) or [0, 0.0]
            rows.append(DayRow(metric, day, int(count), float(value), int(got[0]), float(got[1])))
    return rows


def verdict(short: int, settled: bool) -> str:
    """verified when nothing is short; a shortfall is pending while Klaviyo may still be processing."""
    if short == 0:
        return VERIFIED
    return MISMATCH if settled else PENDING


# -- samples (profiles, catalog items, list members, subscriptions) ---------------------------------

# Attributes Klaviyo sets itself or that a read never returns as sent.
PROFILE_SKIP = frozenset(
    {"id", "created", "updated", "last_event_date", "subscriptions", "predictive_analytics"}
)
NESTED = ("location", "properties")


def flatten_profile(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """A profile's attributes as ``{path: value}``: location and properties one level down."""
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in PROFILE_SKIP:
            continue
        if key in NESTED and isinstance(value, Mapping):
            for inner, inner_value in value.items():
                out[f"{key}.{inner}"] = inner_value
        else:
            out[key] = value
    return out


def same_value(field_name: str, sent: Any, held: Any) -> bool:
    """Whether Klaviyo holds what was sent: emails in any case, numbers by value, blanks as null."""
    if _blank(sent) and _blank(held):
        return True
    if isinstance(sent, str) and isinstance(held, str):
        if field_name.endswith("email"):
            return sent.strip().lower() == held.strip().lower()
        return sent.strip() == held.strip()
    if isinstance(sent, bool) or isinstance(held, bool):
        return sent is held or str(sent).lower() == str(held).lower()
    if isinstance(sent, int | float) or isinstance(held, int | float):
        try:
            return abs(float(sent) - float(held)) <= 1e-9 * max(1.0, abs(float(sent)))
        except (TypeError, ValueError):
            return False
    if isinstance(sent, Mapping) and isinstance(held, Mapping):
        return all(same_value(k, v, held.get(k)) for k, v in sent.items())
    if isinstance(sent, list | tuple) and isinstance(held, list | tuple):
        return len(sent) == len(held) and all(
            same_value(field_name, a, b) for a, b in zip(sent, held, strict=True)
        )
    return bool(sent == held)


def _blank(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


@dataclass
class Difference:
    """One field of one sampled record that Klaviyo holds otherwise than it was sent."""

    row: int
    record: str  # how the record is known: its email, phone, external id or catalog id
    field: str
    sent: Any
    held: Any

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "record": self.record,
            "field": self.field,
            "sent": self.sent,
            "held": self.held,
        }


def compare_record(
    row: int, record: str, sent: Mapping[str, Any], held: Mapping[str, Any] | None
) -> list[Difference]:
    """Differences between the fields sent (flattened) and what Klaviyo holds; a record Klaviyo does
    not have at all is one difference on the field ``(record)``."""
    if held is None:
        return [Difference(row, record, "(record)", "sent", "not found in Klaviyo")]
    return [
        Difference(row, record, name, value, held.get(name))
        for name, value in sent.items()
        if not same_value(name, value, held.get(name))
    ]


@dataclass
class SampleResult:
    """How a sample of records compares: "97 of 100 match; 3 differ" and the differences."""

    checked: int = 0
    matched: int = 0
    differences: list[Difference] = field(default_factory=list)
    missing: int = 0

    def add(self, found: list[Difference]) -> None:
        """Count one sampled record with the differences found for it."""
        self.checked += 1
        if not found:
            self.matched += 1
        elif any(d.field == "(record)" for d in found):
            self.missing += 1
        self.differences.extend(found)

    @property
    def differ(self) -> int:
        return self.checked - self.matched

    def headline(self) -> str:
        """The sentence the run page shows."""
        if self.checked == 0:
            return "No accepted records to check."
        text = f"{self.matched} of {self.checked} match"
        if self.differ:
            text += f"; {self.differ} differ"
            if self.missing:
                text += f" ({self.missing} not found in Klaviyo)"
        return text + "."

    def to_dict(self, keep: int = 100) -> dict[str, Any]:
        """JSON-ready, with at most ``keep`` differences listed."""
        return {
            "checked": self.checked,
            "matched": self.matched,
            "differ": self.differ,
            "missing": self.missing,
            "headline": self.headline(),
            "differences": [d.to_dict() for d in self.differences[:keep]],
            "differences_total": len(self.differences),
        }
