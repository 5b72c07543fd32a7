"""Routing by event name: one source, several mappings, each taking the records of one event.

A record names its event in ``event`` (the ecommerce spec's track calls, and most stores' own
webhooks). Names are compared case-insensitively with runs of spaces as one. A record whose event
has no route is *unrouted*: never mapped by another event's mapping; the caller keeps it until a
route is added. A record that names no event goes through the source's default mapping, if any.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from collections.abc import Mapping as RowMapping
from dataclasses import dataclass, field
from itertools import chain, groupby
from typing import Any, Generic, TypeVar

from sync.issues import Issue
from sync.mapping import Mapping, TargetKind
from sync.pipeline import Pipeline, RowResult
from sync.presets import ECOMMERCE_EVENTS, route_key

EVENT_FIELD = "event"
NO_EVENT = ""  # the route key of records that name no event
MAX_EVENT_NAME = 200

P = TypeVar("P")


def event_name(record: RowMapping[str, Any]) -> str | None:
    """The record's event name as sent (trimmed), or None when it names none."""
    value = record.get(EVENT_FIELD)
    if isinstance(value, str):
        value = value.strip()
        return value[:MAX_EVENT_NAME] or None
    return None


def record_route(record: RowMapping[str, Any]) -> str:
    """The route key of a record: its event's key, or NO_EVENT."""
    name = event_name(record)
    return route_key(name) if name else NO_EVENT


@dataclass
class Router(Generic[P]):
    """Mappings (anything: compiled pipelines, versions) by route key, and the default for records
    without an event name."""

    routes: dict[str, P] = field(default_factory=dict)
    default: P | None = None

    def pick(self, record: RowMapping[str, Any]) -> tuple[str, P | None]:
        """(route key, its mapping) for a record; the mapping is None when the record is unrouted."""
        key = record_route(record)
        return key, self.for_key(key)

    def for_key(self, key: str | None) -> P | None:
        """The mapping of a stored route key (None, from before routing existed, is the default)."""
        if not key:
            return self.default
        return self.routes.get(key)


# ---------------------------------------------------------------- runs over files and feeds

UNROUTED = "unrouted"
UNROUTED_SEVERITY = "skipped"  # a row kept out on purpose: neither failed nor retried
# An order key of a row that belongs to no order of this stream: between two rows of one order it
# shows that the order's rows are not next to each other.
_OTHER_ROW = "\x00other"


def mapping_event_keys(spec: Mapping) -> frozenset[str] | None:
    """Route keys of the events an event or order mapping is for: its metric's name and the
    ecommerce spec's events that become that metric. None when it takes any record: another kind of
    mapping, or one that reads the record's ``event`` itself (one metric for several events)."""
    if spec.target.kind not in (TargetKind.EVENT, TargetKind.ORDER) or EVENT_FIELD in spec.source_columns():
        return None
    metric = spec.target.metric if spec.target.kind is TargetKind.EVENT else spec.options.order_metric
    if not metric:
        return None
    names = [metric, *(event for event, name in ECOMMERCE_EVENTS.items() if name == metric)]
    return frozenset(route_key(name) for name in names)


def unrouted_issue(name: str | None) -> Issue:
    """The reason a record was skipped: its event has no route (mapping) in this run."""
    shown = name or "(no event name)"
    # A warning while mapping; the run stores it on its row with severity UNROUTED_SEVERITY.
    return Issue(UNROUTED, f"{UNROUTED}: {shown}", EVENT_FIELD, "warning")


class RoutedPipeline:
    """Several pipelines over one stream of records, each record through the pipeline of its event.

    Records of an event with no route give a skipped result whose warning is ``unrouted: <name>``:
    never mapped by another event's mapping. Consecutive records of one pipeline are mapped together,
    so an order's adjacent rows still form one order. With ``qualify`` an order's key names its
    metric too, so orders of two routes sharing an order id (a refund of an order) stay apart.
    """

    def __init__(
        self, routes: dict[str, Pipeline], default: Pipeline | None = None, *, qualify: bool = False
    ) -> None:
        self.router: Router[Pipeline] = Router(dict(routes), default)
        self.qualify = qualify
        pipelines = [*routes.values(), *([default] if default is not None else [])]
        self.pipelines = list({id(p): p for p in pipelines}.values())
        self.order_builder = next((p.order_builder for p in self.pipelines if p.order_builder), None)

    def metric_names(self) -> list[str]:
        """Metric names the routes send events to."""
        return list(dict.fromkeys(name for p in self.pipelines for name in p.metric_names()))

    def _key(self, pipeline: Pipeline, key: str | None) -> str | None:
        if key is None or not self.qualify:
            return key
        return f"{key} ({pipeline.metric_names()[0]})"

    def order_key(self, row: RowMapping[str, Any]) -> str | None:
        """The order id of a raw row by its route's mapping; rows of no order mark a break."""
        _, pipeline = self.router.pick(row)
        if pipeline is None or pipeline.order_builder is None:
            return _OTHER_ROW
        return self._key(pipeline, pipeline.order_key(row))

    def groups(self, row: RowMapping[str, Any]) -> bool:
        """True when the row's route puts it into an order."""
        _, pipeline = self.router.pick(row)
        return pipeline is not None and pipeline.order_builder is not None and pipeline.groups(row)

    def run(self, rows: Iterable[tuple[int, RowMapping[str, Any]]]) -> Iterator[RowResult]:
        """One RowResult per record (or order), in source order."""

        def slot(entry: tuple[int, RowMapping[str, Any]]) -> int:
            _, pipeline = self.router.pick(entry[1])
            return id(pipeline) if pipeline is not None else 0

        for mark, segment in groupby(rows, key=slot):
            if mark == 0:
                for number, row in segment:
                    warning = unrouted_issue(event_name(row))
                    yield RowResult(number, [], [], [warning], (number,), skipped=True)
                continue
            head = next(segment)
            _, found = self.router.pick(head[1])
            assert found is not None
            pipeline = found
            for result in pipeline.run(chain((head,), segment)):
                if self.qualify and result.key is not None:
                    result.key = self._key(pipeline, result.key)
                yield result
