"""Routing by event name for runs over uploads and feed records: a run carries a route set (each event
name -> a pinned mapping version), records of events without a route are skipped as unrouted, and
"route and send" starts a run over exactly those records through the mappings then chosen.

A route set comes from one of two places a marketing-ops person already knows: the ecommerce spec
(every spec event through its preset mapping) or an ingest source's routes (the same plan as the
store's real-time endpoint). It is copied into ``run.options["routing"]`` when the run starts, so a
resumed run maps every record exactly as its first attempt did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import (
    IngestRoute,
    IngestSource,
    Mapping,
    MappingVersion,
    RowError,
    RunSource,
    RunStatus,
    SyncRun,
    User,
)
from services import ingest_routes, mappings, runs
from services.ingest import KINDS
from sync.mapping import Mapping as MappingSpec
from sync.pipeline import Pipeline
from sync.presets import ECOMMERCE_EVENTS, ecommerce_event_mapping, route_key
from sync.routing import (
    MAX_EVENT_NAME,
    NO_EVENT,
    UNROUTED,
    RoutedPipeline,
    mapping_event_keys,
)

ROUTING = "routing"  # the key of run.options holding the route set
SPEC_SET = "spec"
INGEST_SET = "ingest:"
CHOICE_PREFIX = "route:"  # how a route set is chosen in a form's mapping select
NO_EVENT_NAME = "(no event name)"


@dataclass(frozen=True)
class RouteSetChoice:
    """One route set offered on the run and schedule forms."""

    value: str  # "route:spec", "route:ingest:<id>"
    label: str


async def route_set_choices(db: AsyncSession) -> list[RouteSetChoice]:
    """The ecommerce spec, then each ingest source that has routes."""
    choices = [
        RouteSetChoice(
            CHOICE_PREFIX + SPEC_SET,
            f"Route by event name: the ecommerce spec ({len(ECOMMERCE_EVENTS)} events, each to its metric)",
        )
    ]
    query = (
        select(IngestSource, func.count())
        .join(IngestRoute, col(IngestRoute.source_id) == col(IngestSource.id))
        .group_by(col(IngestSource.id))
        .order_by(col(IngestSource.name))
    )
    for source, count in (await db.exec(query)).all():
        choices.append(
            RouteSetChoice(
                f"{CHOICE_PREFIX}{INGEST_SET}{source.id}",
                f"Route by event name: as the ingest source {source.name!r} ({count} routes)",
            )
        )
    return choices


def is_route_choice(value: str | None) -> bool:
    return bool(value) and str(value).startswith(CHOICE_PREFIX)


async def _current(db: AsyncSession, mapping: Mapping) -> MappingVersion:
    query = select(MappingVersion).where(
        MappingVersion.mapping_id == mapping.id, MappingVersion.version == mapping.current_version
    )
    return (await db.exec(query)).one()


async def _route(db: AsyncSession, event: str, mapping: Mapping) -> dict[str, Any]:
    version = await _current(db, mapping)
    return {
        "event": event,
        "key": route_key(event) if event != NO_EVENT_NAME else NO_EVENT,
        "mapping_id": mapping.id,
        "version_id": version.id,
        "version": version.version,
        "mapping": mapping.name,
        "kind": mapping.target_kind,
    }


async def spec_mapping(db: AsyncSession, event: str, user: User | None) -> Mapping:
    """The live preset mapping of a spec event (by its preset name), made when there is none."""
    spec = ecommerce_event_mapping(event)
    query = select(Mapping).where(Mapping.name == spec.name, col(Mapping.deleted).is_(False))
    found = (await db.exec(query.order_by(col(Mapping.id)))).first()
    return found or await mappings.create_mapping(db, spec, user)


async def resolve_route_set(db: AsyncSession, choice: str, user: User | None) -> dict[str, Any]:
    """The route set a form's choice names, with every mapping pinned at its current version."""
    name = choice.removeprefix(CHOICE_PREFIX)
    routes: list[dict[str, Any]] = []
    if name == SPEC_SET:
        label = "the ecommerce spec"
        for event in ECOMMERCE_EVENTS:
            routes.append(await _route(db, event, await spec_mapping(db, event, user)))
    elif name.startswith(INGEST_SET) and name.removeprefix(INGEST_SET).isdigit():
        source = await db.get(IngestSource, int(name.removeprefix(INGEST_SET)))
        if source is None:
            raise runs.RunError("That ingest source no longer exists; choose another way to route.")
        label = f"the ingest source {source.name!r}"
        for route, mapping in await ingest_routes.list_routes(db, source.id or 0):
            if mapping.deleted:
                continue  # its records are kept unrouted, as the ingest API does
            routes.append(await _route(db, route.event_name, mapping))
        default = await db.get(Mapping, source.mapping_id) if source.mapping_id else None
        if default is not None and not default.deleted and default.target_kind in KINDS:
            routes.append(await _route(db, NO_EVENT_NAME, default))
    else:
        raise runs.RunError("Choose a mapping, or a way to route records by their event name.")
    if not routes:
        raise runs.RunError(f"{label[:1].upper()}{label[1:]} has no route to a live mapping yet.")
    return {"set": label, "routes": routes}


async def start_routed_run(
    db: AsyncSession,
    *,
    upload_id: int,
    routing: dict[str, Any],
    dry_run: bool,
    backfill: bool,
    user: User | None,
    source: RunSource = RunSource.UPLOAD,
) -> SyncRun:
    """A queued run of an upload whose records each go through the route of their event."""
    first = routing["routes"][0]
    run = await runs.create_run(
        db,
        upload_id=upload_id,
        mapping_id=first["mapping_id"],
        dry_run=dry_run,
        backfill=backfill,
        user=user,
        source=source,
    )
    _apply(run, routing)
    await db.flush()
    return run


def _apply(run: SyncRun, routing: dict[str, Any]) -> None:
    kinds = {route["kind"] for route in routing["routes"]}
    run.kind = "order" if "order" in kinds else "event"
    run.mapping_version_id = routing["routes"][0]["version_id"]
    run.options = {**run.options, ROUTING: routing}
    run.summary = {**run.summary, "mapping_issues": []}


def _with_backfill(spec: MappingSpec, backfill: bool) -> MappingSpec:
    return spec.model_copy(update={"options": spec.options.model_copy(update={"backfill": backfill})})


async def run_pipeline(db: AsyncSession, run: SyncRun, spec: MappingSpec) -> Pipeline | RoutedPipeline:
    """How a run maps its records. A routed run: each record through its event's pinned mapping. A
    run of one event or order mapping: records naming another event are unrouted, never mapped by
    it (a record naming no event goes through it)."""
    backfill = bool(run.options.get("backfill", True))
    routing = run.options.get(ROUTING)
    if not routing:
        pipeline = Pipeline(_with_backfill(spec, backfill))
        keys = mapping_event_keys(spec)
        if keys is None:
            return pipeline
        return RoutedPipeline(dict.fromkeys(keys, pipeline), pipeline)
    by_version: dict[int, Pipeline] = {}
    routes: dict[str, Pipeline] = {}
    default: Pipeline | None = None
    for route in routing["routes"]:
        version_id = int(route["version_id"])
        if version_id not in by_version:
            version = await db.get(MappingVersion, version_id)
            if version is None:
                raise runs.RunError(f"The mapping version of the route {route['event']!r} no longer exists.")
            by_version[version_id] = Pipeline(
                _with_backfill(MappingSpec.model_validate(version.spec), backfill)
            )
        if route["key"] == NO_EVENT:
            default = by_version[version_id]
        else:
            routes[route["key"]] = by_version[version_id]
    return RoutedPipeline(routes, default, qualify=True)


async def unrouted_counts(db: AsyncSession, run_id: int) -> dict[str, int]:
    """Records of a run skipped as unrouted, by event name (most first)."""
    query = (
        select(RowError.message, func.count(func.distinct(RowError.row_number)))
        .where(RowError.run_id == run_id, RowError.rule == UNROUTED)
        .group_by(RowError.message)
    )
    counts = {str(message).partition(": ")[2]: int(count) for message, count in (await db.exec(query)).all()}
    return dict(sorted(counts.items(), key=lambda entry: (-entry[1], entry[0])))


@dataclass
class UnroutedPick:
    """An unrouted event name on the run page, with the mapping suggested for it."""

    name: str
    count: int
    suggested: int | None


async def unrouted_picks(db: AsyncSession, run: SyncRun) -> list[UnroutedPick]:
    """The run's unrouted names, each with its spec preset mapping when one exists."""
    counts = run.summary.get("unrouted") or {}
    if not counts:
        return []
    live = {
        m.name: m.id for m in (await db.exec(select(Mapping).where(col(Mapping.deleted).is_(False)))).all()
    }
    by_key = {route_key(event): event for event in ECOMMERCE_EVENTS}
    picks = []
    for name, count in counts.items():
        event = by_key.get(route_key(name))
        suggested = live.get(ecommerce_event_mapping(event).name) if event else None
        picks.append(UnroutedPick(name, int(count), suggested))
    return picks


async def event_mappings(db: AsyncSession) -> list[Mapping]:
    """Live event and order mappings, the ones a route can take."""
    query = select(Mapping).where(col(Mapping.deleted).is_(False), col(Mapping.target_kind).in_(KINDS))
    return list((await db.exec(query.order_by(col(Mapping.name)))).all())


async def route_unrouted(
    db: AsyncSession, parent: SyncRun, picks: dict[str, int], user: User | None, *, dry_run: bool = False
) -> SyncRun:
    """A new run over the records ``parent`` kept unrouted whose event is now given a mapping
    (``picks``: event name as listed -> mapping id); names left unpicked stay out."""
    if not parent.status.finished:
        raise runs.RunError("Wait until the run has finished before routing its unrouted records.")
    chosen = {name: mapping_id for name, mapping_id in picks.items() if mapping_id}
    if not chosen:
        raise runs.RunError("Choose a mapping for at least one unrouted event.")
    routes = []
    for name, mapping_id in chosen.items():
        mapping = await db.get(Mapping, mapping_id)
        if mapping is None or mapping.deleted:
            raise runs.RunError(f"The mapping chosen for {name!r} no longer exists.")
        if mapping.target_kind not in KINDS:
            raise runs.RunError(
                f"{mapping.name!r} is a {mapping.target_kind} mapping; events need an event or order mapping."
            )
        routes.append(await _route(db, name[:MAX_EVENT_NAME], mapping))
    wanted = {route["key"] for route in routes}
    query = (
        select(RowError.row_number, RowError.message)
        .where(RowError.run_id == parent.id, RowError.rule == UNROUTED, RowError.row_number > 0)
        .distinct()
    )
    rows = sorted(
        {
            int(row)
            for row, message in (await db.exec(query)).all()
            if _key_of(str(message).partition(": ")[2]) in wanted
        }
    )
    if not rows:
        raise runs.RunError("This run has no unrouted records of those events.")
    options = {k: v for k, v in parent.options.items() if k != ROUTING}
    run = SyncRun(
        kind=parent.kind,
        source=RunSource.RETRY,
        status=RunStatus.QUEUED,
        dry_run=dry_run,
        upload_id=parent.upload_id,
        parent_run_id=parent.id,
        only_rows=rows,
        options={**options, "unrouted_of": parent.id},
        summary={},
        total_rows=len(rows),
        created_by=user.id if user else None,
    )
    _apply(run, {"set": f"chosen for the unrouted records of run #{parent.id}", "routes": routes})
    db.add(run)
    await db.flush()
    if not dry_run:  # the parent's page links to the runs that sent its unrouted records
        sent_by = [*parent.summary.get("unrouted_runs", []), run.id]
        parent.summary = {**parent.summary, "unrouted_runs": sent_by}
        db.add(parent)
    return run


def _key_of(name: str) -> str:
    return NO_EVENT if name == NO_EVENT_NAME else route_key(name)


async def repin(db: AsyncSession, run: SyncRun) -> None:
    """Pin a routed run's routes to their mappings' current versions (a retry of failed rows goes
    through the mappings as they are now, as a retry of one mapping does)."""
    routing = run.options.get(ROUTING)
    if not routing:
        return
    routes = []
    for route in routing["routes"]:
        mapping = await db.get(Mapping, route["mapping_id"])
        if mapping is None or mapping.deleted:
            raise runs.RunError(
                f"The mapping of the route {route['event']!r} was deleted; route that event again "
                "from a new run instead."
            )
        version = await _current(db, mapping)
        routes.append(
            {**route, "version_id": version.id, "version": version.version, "mapping": mapping.name}
        )
    run.options = {**run.options, ROUTING: {**routing, "routes": routes}}
    run.mapping_version_id = routes[0]["version_id"]
