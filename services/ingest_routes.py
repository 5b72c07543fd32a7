"""An ingest source's routes (a mapping per event name), the records kept unrouted, and the
per-route counts of the source page ("one endpoint for a whole tracking plan")."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import InboxStatus, IngestRecord, IngestRoute, IngestSource, Mapping, User
from models.base import utcnow
from services import mappings
from services.ingest import KINDS, SourceError
from sync.presets import ECOMMERCE_EVENTS, ecommerce_event_mapping, route_key
from sync.routing import MAX_EVENT_NAME, NO_EVENT, event_name

COUNT_WINDOW = timedelta(days=1)
SHOWN_NAMES = 50


@dataclass
class RouteCounts:
    """Records received over the window, by where they stand now."""

    received: int = 0
    sent: int = 0
    refused: int = 0
    waiting: int = 0
    unrouted: int = 0

    def add(self, status: str, count: int) -> None:
        self.received += count
        if status == InboxStatus.SENT:
            self.sent += count
        elif status == InboxStatus.FAILED:
            self.refused += count
        elif status == InboxStatus.UNROUTED:
            self.unrouted += count
        else:
            self.waiting += count


@dataclass
class RouteRow:
    """One route as the page shows it."""

    route: IngestRoute
    mapping_name: str
    mapping_deleted: bool
    counts: RouteCounts = field(default_factory=RouteCounts)
    kept: int = 0  # unrouted records waiting for this route (a mapping deleted, a route re-added)


@dataclass
class UnroutedName:
    """An event name records arrived with and no route takes: kept until one is added."""

    key: str
    name: str  # as the store sent it (the newest record's spelling)
    kept: int
    last_day: int
    last_received_at: Any = None


@dataclass
class RoutePlan:
    """The source page's routing table."""

    routes: list[RouteRow]
    default: RouteCounts  # records naming no event, through the source's own mapping
    unrouted: list[UnroutedName]
    since: datetime
    spec_missing: int = 0  # events of the ecommerce spec without a route


async def list_routes(db: AsyncSession, source_id: int) -> list[tuple[IngestRoute, Mapping]]:
    query = (
        select(IngestRoute, Mapping)
        .join(Mapping, col(Mapping.id) == col(IngestRoute.mapping_id))
        .where(IngestRoute.source_id == source_id)
        .order_by(col(IngestRoute.event_name))
    )
    return [(route, mapping) for route, mapping in (await db.exec(query)).all()]


async def add_route(
    db: AsyncSession, source: IngestSource, event: str, mapping_id: int, *, replay: bool = True
) -> tuple[IngestRoute, int]:
    """Route ``event`` (case-insensitive) through the mapping; with ``replay`` the records kept
    unrouted for that event are queued to go out through it. Returns the route and that count."""
    name = " ".join(event.split())
    if not name:
        raise SourceError(
            'Type the event name records carry in their "event" field, such as Order Completed.'
        )
    if len(name) > MAX_EVENT_NAME:
        raise SourceError(f"An event name has at most {MAX_EVENT_NAME} characters.")
    mapping = await db.get(Mapping, mapping_id) if mapping_id else None
    if mapping is None or mapping.deleted:
        raise SourceError("Choose the event or order mapping this event's records go through.")
    if mapping.target_kind not in KINDS:
        raise SourceError(
            f"{mapping.name!r} is a {mapping.target_kind} mapping; ingest sends events and orders only."
        )
    key = route_key(name)
    taken = (
        await db.exec(
            select(IngestRoute).where(IngestRoute.source_id == source.id, IngestRoute.event_key == key)
        )
    ).first()
    if taken is not None:
        raise SourceError(
            f"{taken.event_name!r} is routed already (names are compared without case); remove that route "
            "first to send it through another mapping."
        )
    route = IngestRoute(source_id=source.id or 0, event_name=name, event_key=key, mapping_id=mapping_id)
    db.add(route)
    await db.flush()
    return route, (await replay_unrouted(db, source.id or 0, key) if replay else 0)


async def remove_route(db: AsyncSession, source: IngestSource, route_id: int) -> IngestRoute:
    """Stop routing an event: its records arriving from now on are kept unrouted."""
    route = await db.get(IngestRoute, route_id)
    if route is None or route.source_id != source.id:
        raise SourceError("That route no longer exists.")
    await db.delete(route)
    await db.flush()
    return route


async def replay_unrouted(db: AsyncSession, source_id: int, key: str) -> int:
    """Queue the records kept unrouted for an event (now routed) to be sent; returns how many."""
    result = await db.exec(
        update(IngestRecord)
        .where(
            col(IngestRecord.source_id) == source_id,
            col(IngestRecord.status) == InboxStatus.UNROUTED,
            col(IngestRecord.route) == key,
        )
        .values(
            status=InboxStatus.PENDING, attempts=0, next_attempt_at=None, error_kind=None, last_error=None
        )
    )
    return int(result.rowcount or 0)


async def route_whole_spec(db: AsyncSession, source: IngestSource, user: User | None) -> list[str]:
    """A route for every event of the ecommerce spec not routed yet, each through its preset mapping
    (an existing live mapping of the preset's name, else a new one); records kept for those events
    are queued. Returns the events routed."""
    routed = {route.event_key for route, _ in await list_routes(db, source.id or 0)}
    live = {
        mapping.name: mapping
        for mapping in (await db.exec(select(Mapping).where(col(Mapping.deleted).is_(False)))).all()
    }
    added: list[str] = []
    for event in ECOMMERCE_EVENTS:
        if route_key(event) in routed:
            continue
        spec = ecommerce_event_mapping(event)
        mapping = live.get(spec.name)
        if mapping is None:
            mapping = live[spec.name] = await mappings.create_mapping(db, spec, user)
        await add_route(db, source, event, mapping.id or 0)
        added.append(event)
    return added


async def route_plan(db: AsyncSession, source: IngestSource, now: datetime | None = None) -> RoutePlan:
    """The routes with their counts over the last day, and the event names kept unrouted."""
    source_id = source.id or 0
    since = (now or utcnow()) - COUNT_WINDOW
    counted = (
        select(col(IngestRecord.route), col(IngestRecord.status), func.count())
        .where(col(IngestRecord.source_id) == source_id, col(IngestRecord.received_at) >= since)
        .group_by(col(IngestRecord.route), col(IngestRecord.status))
    )
    by_route: dict[str, RouteCounts] = {}
    for route, status, count in (await db.exec(counted)).all():
        by_route.setdefault(route or NO_EVENT, RouteCounts()).add(str(status), int(count))
    kept_query = (
        select(col(IngestRecord.route), func.count(), func.max(col(IngestRecord.id)))
        .where(col(IngestRecord.source_id) == source_id, col(IngestRecord.status) == InboxStatus.UNROUTED)
        .group_by(col(IngestRecord.route))
    )
    kept = {(key or NO_EVENT): (int(n), int(last or 0)) for key, n, last in (await db.exec(kept_query)).all()}
    rows = []
    for entry, mapping in await list_routes(db, source_id):
        rows.append(
            RouteRow(
                entry,
                mapping.name,
                mapping.deleted,
                by_route.pop(entry.event_key, RouteCounts()),
                kept.pop(entry.event_key, (0, 0))[0],
            )
        )
    default = by_route.pop(NO_EVENT, RouteCounts())
    names: list[UnroutedName] = []
    for key, (count, last_id) in sorted(kept.items(), key=lambda entry: -entry[1][0])[:SHOWN_NAMES]:
        newest = await db.get(IngestRecord, last_id)
        shown = (event_name(newest.body) if newest is not None else None) or "(no event name)"
        day = by_route.get(key, RouteCounts()).unrouted
        names.append(UnroutedName(key, shown, count, day, newest.received_at if newest is not None else None))
    routed = {entry.route.event_key for entry in rows}
    missing = sum(1 for event in ECOMMERCE_EVENTS if route_key(event) not in routed)
    return RoutePlan(rows, default, names, since, missing)
