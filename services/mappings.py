"""Mappings: versioned specs (never edited in place), import/export, and the studio's live preview.

A save adds a MappingVersion; a run records the version it used, so an old run can always be
explained by the exact spec it ran with. The preview runs ``sync.pipeline`` on sample rows and wraps
each row's items in the endpoint envelope, the same bytes a worker sends for those items.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from klaviyo import endpoints as ep
from klaviyo.client import list_relationship, lists_relationship, subscription_options
from klaviyo.serialization import dumps
from models import Mapping, MappingVersion, SyncRun, Upload, UploadStatus, User
from models.base import utcnow
from services.mapping_editor import explain_validation
from services.metric_cache import MetricCache
from sync import presets
from sync.compiler import DROPPED, EMPTY, compile_mapping
from sync.issues import Issue, RuleError, SkipRow, warning
from sync.mapping import Mapping as Spec
from sync.mapping import MappingOptions, Target, TargetKind, column, parse_path, split_template
from sync.pipeline import Pipeline, RowResult, dry_run
from sync.readers import SourceError, read_csv, read_json

SAMPLE_MAX_BYTES = 256 * 1024
SAMPLE_MAX_ROWS = 200
SAMPLE_TTL_SECONDS = 24 * 3600


class MappingsError(ValueError):
    """An operation on mappings was refused; the message says why and what to do."""


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class MappingSummary:
    """One line of the mappings list."""

    mapping: Mapping
    metric: str | None
    runs: int


async def list_mappings(db: AsyncSession) -> list[MappingSummary]:
    """Live mappings, most recently changed first, with their metric and how many runs used them."""
    runs = (
        select(MappingVersion.mapping_id, func.count(col(SyncRun.id)).label("runs"))
        .join(SyncRun, col(SyncRun.mapping_version_id) == col(MappingVersion.id))
        .group_by(col(MappingVersion.mapping_id))
        .subquery()
    )
    query = (
        select(Mapping, MappingVersion.spec, runs.c.runs)
        .join(
            MappingVersion,
            (col(MappingVersion.mapping_id) == col(Mapping.id))
            & (col(MappingVersion.version) == col(Mapping.current_version)),
        )
        .outerjoin(runs, runs.c.mapping_id == col(Mapping.id))
        .where(col(Mapping.deleted).is_(False))
        .order_by(col(Mapping.updated_at).desc(), col(Mapping.id).desc())
    )
    out = []
    for mapping, spec, count in (await db.exec(query)).all():
        out.append(MappingSummary(mapping, _metric_label(spec), int(count or 0)))
    return out


def _metric_label(spec: Any) -> str | None:
    target = spec.get("target") or {}
    if target.get("kind") == TargetKind.ORDER:
        return str((spec.get("options") or {}).get("order_metric") or "Placed Order")
    return target.get("metric")


async def get_mapping(db: AsyncSession, mapping_id: int) -> Mapping | None:
    """A live (not deleted) mapping."""
    mapping = await db.get(Mapping, mapping_id)
    return mapping if mapping is not None and not mapping.deleted else None


async def get_version(
    db: AsyncSession, mapping: Mapping, version: int | None = None
) -> MappingVersion | None:
    """A version of ``mapping`` (the current one by default)."""
    query = select(MappingVersion).where(
        MappingVersion.mapping_id == mapping.id,
        MappingVersion.version == (version or mapping.current_version),
    )
    return (await db.exec(query)).first()


async def list_versions(db: AsyncSession, mapping: Mapping) -> list[tuple[MappingVersion, int]]:
    """Every version, newest first, with the number of runs that used it."""
    query = (
        select(MappingVersion, func.count(col(SyncRun.id)))
        .outerjoin(SyncRun, col(SyncRun.mapping_version_id) == col(MappingVersion.id))
        .where(MappingVersion.mapping_id == mapping.id)
        .group_by(col(MappingVersion.id))
        .order_by(col(MappingVersion.version).desc())
    )
    return [(version, int(count)) for version, count in (await db.exec(query)).all()]


async def runs_using(db: AsyncSession, mapping: Mapping) -> int:
    """How many runs used any version of ``mapping``."""
    query = (
        select(func.count(col(SyncRun.id)))
        .join(MappingVersion, col(SyncRun.mapping_version_id) == col(MappingVersion.id))
        .where(MappingVersion.mapping_id == mapping.id)
    )
    return int((await db.exec(query)).one())


def spec_of(version: MappingVersion) -> Spec:
    """The stored spec as a sync.mapping.Mapping."""
    return Spec.model_validate(version.spec)


# ---------------------------------------------------------------- writing


async def _unique_name(db: AsyncSession, name: str, exclude_id: int | None = None) -> str:
    taken = set(
        (
            await db.exec(
                select(Mapping.name).where(
                    col(Mapping.deleted).is_(False), col(Mapping.id) != (exclude_id or -1)
                )
            )
        ).all()
    )
    if name not in taken:
        return name
    base = re.sub(r" \(\d+\)$", "", name)
    number = 2
    while f"{base} ({number})" in taken:
        number += 1
    return f"{base} ({number})"[:200]


def check_runnable(spec: Spec) -> None:
    """Refuse a spec its target builder cannot run (unknown targets, no order id, bad zone...)."""
    try:
        Pipeline(spec)
    except ValueError as exc:
        raise MappingsError(str(exc)) from None


async def create_mapping(db: AsyncSession, spec: Spec, user: User | None = None) -> Mapping:
    """A new mapping with ``spec`` as version 1 (the name made unique among live mappings)."""
    check_runnable(spec)
    name = await _unique_name(db, spec.name)
    spec = spec.model_copy(update={"name": name, "version": 1})
    mapping = Mapping(name=name, target_kind=spec.target.kind.value, created_by=user.id if user else None)
    db.add(mapping)
    await db.flush()
    assert mapping.id is not None
    db.add(_version_row(mapping.id, spec, user))
    await db.flush()
    return mapping


def _version_row(mapping_id: int, spec: Spec, user: User | None) -> MappingVersion:
    return MappingVersion(
        mapping_id=mapping_id,
        version=spec.version,
        spec=orjson.loads(spec.to_json()),
        created_by=user.id if user else None,
    )


async def save_version(
    db: AsyncSession, mapping: Mapping, spec: Spec, user: User | None = None
) -> MappingVersion:
    """Store ``spec`` as the next version of ``mapping``; older versions stay exactly as they were."""
    check_runnable(spec)
    if spec.target.kind.value != mapping.target_kind:
        raise MappingsError(
            f"this mapping sends {mapping.target_kind} data; "
            f"create a new mapping for {spec.target.kind.value}"
        )
    if spec.name != mapping.name and await _unique_name(db, spec.name, mapping.id) != spec.name:
        raise MappingsError(f"another mapping is already called {spec.name!r}; pick another name")
    # Lock the mapping row so two saves at once get consecutive numbers (PostgreSQL; SQLite serialises).
    locked = (await db.exec(select(Mapping).where(Mapping.id == mapping.id).with_for_update())).one()
    latest = (
        await db.exec(select(func.max(MappingVersion.version)).where(MappingVersion.mapping_id == locked.id))
    ).one()
    number = int(latest or 0) + 1
    spec = spec.model_copy(update={"version": number})
    assert locked.id is not None
    version = _version_row(locked.id, spec, user)
    locked.current_version, locked.name, locked.updated_at = number, spec.name, utcnow()
    db.add_all([version, locked])
    await db.flush()
    return version


async def duplicate_mapping(db: AsyncSession, mapping: Mapping, user: User | None = None) -> Mapping:
    """A new mapping whose version 1 is a copy of ``mapping``'s current version."""
    version = await get_version(db, mapping)
    if version is None:
        raise MappingsError("this mapping has no stored version to copy")
    spec = spec_of(version)
    return await create_mapping(db, spec.model_copy(update={"name": f"Copy of {spec.name}"[:200]}), user)


async def delete_mapping(db: AsyncSession, mapping: Mapping) -> None:
    """Soft-delete, refused while any run used one of its versions (the run must stay explainable)."""
    used = await runs_using(db, mapping)
    if used:
        raise MappingsError(
            f"{mapping.name} was used by {used} run{'s' if used != 1 else ''}, so it cannot be deleted: "
            "those runs must stay explainable. Rename it or stop using it instead."
        )
    mapping.deleted, mapping.updated_at = True, utcnow()
    db.add(mapping)
    await db.flush()


# ---------------------------------------------------------------- import and export


def export_json(version: MappingVersion) -> tuple[str, str]:
    """(file name, JSON text) for a download of one version."""
    spec = spec_of(version)
    slug = re.sub(r"[^a-z0-9]+", "-", spec.name.lower()).strip("-")[:60] or "mapping"
    return f"mapping-{slug}-v{spec.version}.json", spec.to_json()


def parse_spec_json(text: str | bytes) -> Spec:
    """Validate an exported mapping; MappingsError names every field at fault."""
    if not (text.strip() if isinstance(text, str) else text.strip()):
        raise MappingsError("the file is empty; choose a mapping exported from this console")
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise MappingsError(f"this is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MappingsError("a mapping file holds one JSON object with name, target and fields")
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        raise MappingsError("; ".join(explain_validation(exc, data))) from None
    check_runnable(spec)
    return spec


async def import_mapping(db: AsyncSession, text: str | bytes, user: User | None = None) -> Mapping:
    """Create a mapping from exported JSON (a new mapping, version 1)."""
    return await create_mapping(db, parse_spec_json(text), user)


# ---------------------------------------------------------------- new mappings from presets

# "What to send" choices of the new-mapping form: value -> (label, kind, metric).
ORDER_METRICS = ("Placed Order", "Fulfilled Order", "Canceled Order", "Refunded Order")
EVENT_METRICS = (
    "Viewed Product", "Added to Cart", "Started Checkout", "Ordered Product", "Viewed Category",
    "Searched Site", "Clicked Banner",
)  # fmt: skip
OTHER_KINDS = {
    "profile": "Profiles",
    "catalog_item": "Catalog items",
    "catalog_variant": "Catalog variants",
    "catalog_category": "Catalog categories",
    "subscription": "Email / SMS subscriptions",
    "list_membership": "List membership (by email, phone or profile id)",
}
SOURCE_PRESETS = {
    "auto": "Detect from the sample",
    "shopify_orders": "Shopify orders export (CSV)",
    "woocommerce_orders": "WooCommerce orders export (CSV)",
    "ecommerce_spec": "Common ecommerce event spec (JSON track calls)",
    "blank": "Start from the standard fields",
}
_SPEC_EVENT_FOR_METRIC = {metric: event for event, metric in reversed(presets.ECOMMERCE_EVENTS.items())}
_STARTERS: dict[TargetKind, list[tuple[str, str]]] = {
    TargetKind.ORDER: [
        ("OrderId", "properties.OrderId"), ("Email", "email"), ("Created At", "time"), ("Total", "value"),
        ("Currency", "value_currency"), ("SKU", "item.SKU"), ("Product Name", "item.ProductName"),
        ("Quantity", "item.Quantity"), ("Price", "item.ItemPrice"),
    ],
    TargetKind.EVENT: [("Email", "email"), ("Time", "time")],
    TargetKind.PROFILE: [
        ("Email", "email"), ("Phone", "phone_number"), ("First Name", "first_name"),
        ("Last Name", "last_name"),
    ],
    TargetKind.CATALOG_ITEM: [
        ("Id", "external_id"), ("Title", "title"), ("Description", "description"), ("URL", "url"),
        ("Price", "price"), ("Image", "image_full_url"),
    ],
    TargetKind.CATALOG_VARIANT: [
        ("Id", "external_id"), ("Product Id", "item_external_id"), ("Title", "title"),
        ("Description", "description"), ("SKU", "sku"), ("Inventory", "inventory_quantity"),
        ("Price", "price"), ("URL", "url"),
    ],
    TargetKind.CATALOG_CATEGORY: [("Id", "external_id"), ("Name", "name")],
    TargetKind.SUBSCRIPTION: [("Email", "email"), ("Phone", "phone_number")],
    TargetKind.LIST_MEMBERSHIP: [("Email", "email")],
}  # fmt: skip


def parse_choice(choice: str, custom_metric: str = "") -> tuple[TargetKind, str | None]:
    """The new-mapping form's "what to send" value -> (kind, metric)."""
    kind_name, _, metric = choice.partition(":")
    try:
        kind = TargetKind(kind_name)
    except ValueError:
        raise MappingsError(f"unknown target {choice!r}") from None
    if kind is TargetKind.EVENT and metric == "custom":
        metric = custom_metric.strip()
        if not metric:
            raise MappingsError("type the name of your custom metric")
    return kind, metric or None


def new_spec(
    name: str, kind: TargetKind, metric: str | None, source: str = "auto", headers: Sequence[str] = ()
) -> Spec:
    """A first version for the new-mapping form: a source preset, header suggestions, or starters."""
    if source == "auto":
        source = presets.detect_source(headers) or ("suggest" if headers else "blank")
    if source == "suggest" and kind.value.startswith("catalog_"):
        # Header suggestions speak events and orders ("Price" -> item.ItemPrice); a catalog mapping
        # starts from its own fields, matched to the sample's headers.
        source = "blank"
    order_metric = metric if kind is TargetKind.ORDER else None
    if source in ("shopify_orders", "woocommerce_orders"):
        if kind is not TargetKind.ORDER:
            raise MappingsError(
                "order exports map to an order metric: pick Placed, Fulfilled, Canceled or Refunded Order"
            )
        build = (
            presets.shopify_orders_mapping
            if source == "shopify_orders"
            else presets.woocommerce_orders_mapping
        )
        line = "Ordered Product" if order_metric == "Placed Order" else None
        spec = build(order_metric or "Placed Order", line_metric=line)
    elif source == "ecommerce_spec":
        event = _SPEC_EVENT_FOR_METRIC.get(metric or "")
        if event is None or (kind is TargetKind.ORDER) != (event in presets.ORDER_EVENTS):
            raise MappingsError(
                "the ecommerce spec preset covers "
                + ", ".join(dict.fromkeys(presets.ECOMMERCE_EVENTS.values()))
                + " (order metrics as order mappings)"
            )
        spec = presets.ecommerce_event_mapping(event)
    elif source == "suggest":
        spec = presets.suggest_mapping(headers, kind, metric) or _starter(kind, metric)
        if kind is TargetKind.ORDER and "properties.OrderId" not in spec.targets():
            spec = spec.model_copy(update={"fields": [column("OrderId", "properties.OrderId"), *spec.fields]})
    elif kind is TargetKind.EVENT and metric in presets.STANDARD_METRICS:
        spec = presets.standard_event_mapping(metric)
    else:
        spec = _starter(kind, metric)
    if headers and source not in ("shopify_orders", "woocommerce_orders", "suggest"):
        spec = adopt_headers(spec, headers)
        if kind.value.startswith("catalog_"):
            # Optional catalog fields the sample has no column for (an image, say) are left out.
            fields = [r for r in spec.fields if r.source.kind != "column" or r.source.column in headers]
            # Catalog fields the sample has a column for but the starter lacks (inventory policy, images).
            taken = {r.target for r in fields}
            taken |= {r.source.column for r in fields if r.source.kind == "column"}
            for header, hint in presets.suggest_targets(headers, kind).items():
                if not hint or header in taken or hint.target in taken:
                    continue
                if not hint.target.startswith("custom_metadata."):
                    fields.append(column(header, hint.target, *hint.transforms))
                    taken |= {header, hint.target}
            spec = spec.model_copy(update={"fields": fields})
    target = Target(kind=kind, metric=metric if kind is TargetKind.EVENT else None)
    options = spec.options
    if order_metric:
        line = options.line_metric if order_metric == "Placed Order" else None
        options = options.model_copy(update={"order_metric": order_metric, "line_metric": line})
    chosen = name.strip()
    if not chosen:
        preset_named = source in ("shopify_orders", "woocommerce_orders", "ecommerce_spec")
        chosen = spec.name if preset_named else str(metric or OTHER_KINDS.get(kind.value, kind.value))
    return spec.model_copy(update={"name": chosen[:200], "target": target, "options": options})


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def adopt_headers(spec: Spec, headers: Sequence[str]) -> Spec:
    """Point a preset's column rules at the sample's own headers: "ProductName" reads "Product Name",
    and a rule whose column is missing takes the header suggested for its target ("E-mail" -> email)."""
    present = set(headers)
    by_squash = {_squash(h): h for h in headers}
    hints = presets.suggest_targets(headers, spec.target.kind)
    by_target = {hint.target: header for header, hint in hints.items() if hint}
    used = {rule.source.column for rule in spec.fields if rule.source.kind == "column"} & present
    fields = []
    for rule in spec.fields:
        if rule.source.kind == "column" and rule.source.column not in present:
            header = by_squash.get(_squash(rule.source.column)) or by_target.get(rule.target)
            if header and header not in used:
                used.add(header)
                rule = rule.model_copy(update={"source": rule.source.model_copy(update={"column": header})})
        fields.append(rule)
    return spec.model_copy(update={"fields": fields})


def _starter(kind: TargetKind, metric: str | None) -> Spec:
    rules = [column(source, target) for source, target in _STARTERS[kind]]
    return Spec(
        name="New mapping", target=Target(kind=kind, metric=metric), options=MappingOptions(), fields=rules
    )


# ---------------------------------------------------------------- samples


@dataclass
class Sample:
    """Rows to preview with: (row number, row dict) pairs, their columns, and reader findings."""

    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    label: str = ""
    truncated: bool = False

    @property
    def empty(self) -> bool:
        return not self.rows

    def examples(self, name: str, count: int = 3) -> list[str]:
        """Up to ``count`` non-empty values of a column (or JSON path) from the first rows."""
        out = []
        for _, row in self.rows[:count]:
            value = row.get(name) if name in row else _path_value(row, name)
            if value is not None and value != "":
                out.append(value if isinstance(value, str) else orjson.dumps(value, default=str).decode())
        return out


def sample_from_text(text: str) -> Sample:
    """Pasted CSV or JSON (an array, one object, or NDJSON); the kind is told by the first character."""
    text = text.strip("\ufeff")
    if not text.strip():
        return Sample(label="pasted text")
    if len(text.encode()) > SAMPLE_MAX_BYTES:
        return Sample(problems=[f"the pasted sample is over {SAMPLE_MAX_BYTES // 1024} KB; paste fewer rows"])
    try:
        if text.lstrip()[0] in "[{":
            rows = []
            for number, row in read_json(text, source="the pasted JSON"):
                rows.append((number, row))
                if len(rows) >= SAMPLE_MAX_ROWS:
                    break
            return _sample(rows, "pasted JSON", nested=True)
        return _csv_sample(text)
    except SourceError as exc:
        return Sample(problems=[str(exc)], label="pasted text")


def _csv_sample(text: str) -> Sample:
    handle, path = tempfile.mkstemp(suffix=".csv", prefix="kc-sample-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(text if text.endswith("\n") else text + "\n")
        with read_csv(path, encoding="utf-8") as reader:
            rows = []
            for number, row in reader:
                rows.append((number, row))
                if len(rows) >= SAMPLE_MAX_ROWS:
                    break
            sample = _sample(rows, "pasted CSV", columns=reader.headers)
            sample.problems += [problem.message for problem in reader.problems]
            return sample
    finally:
        os.unlink(path)


def sample_from_upload(upload: Upload) -> Sample:
    """An upload's first rows, as analysed when it was uploaded."""
    rows = [(number, dict(row)) for number, row in enumerate(upload.preview or [], start=1)]
    label = f"{upload.filename} (first {len(rows)} of {upload.row_count or len(rows):,} rows)"
    return _sample(rows, label, columns=list(upload.headers or []), nested=not upload.headers)


def _sample(
    rows: list[tuple[int, dict[str, Any]]], label: str, columns: Sequence[str] = (), nested: bool = False
) -> Sample:
    found = list(columns)
    if nested or not found:
        for _, row in rows[:20]:
            for name in _paths(row):
                if name not in found:
                    found.append(name)
    return Sample(rows=rows, columns=found, label=label, truncated=len(rows) >= SAMPLE_MAX_ROWS)


def _paths(value: Any, prefix: str = "", depth: int = 0) -> Iterable[str]:
    """Top-level keys and nested paths (``context.traits.email``) of a JSON record."""
    if not isinstance(value, dict):
        return
    for key, inner in value.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        yield path
        if isinstance(inner, dict) and depth < 3:
            yield from _paths(inner, path, depth + 1)


async def ready_uploads(db: AsyncSession, limit: int = 30) -> list[Upload]:
    """Uploads that can feed the studio's sample picker, newest first."""
    query = (
        select(Upload)
        .where(Upload.status == UploadStatus.READY)
        .order_by(col(Upload.created_at).desc())
        .limit(limit)
    )
    return list((await db.exec(query)).all())


def sample_value(row: dict[str, Any], spec_rule: Any) -> Any:
    """The raw value a rule reads from ``row`` (before transforms), or None."""
    src = spec_rule.source
    if src.kind == "column":
        return row.get(src.column)
    if src.kind == "constant":
        return src.value
    if src.kind == "template":
        parts = []
        for is_column, text in split_template(src.template):
            value = row.get(text) if is_column else text
            if is_column and (value is None or str(value).strip() == ""):
                return None
            parts.append(str(value))
        return "".join(parts)
    return _path_value(row, src.path)


def _path_value(row: dict[str, Any], path: str) -> Any:
    try:
        keys = parse_path(path)
    except ValueError:
        return None
    node: Any = row
    for key in keys:
        if isinstance(key, int):
            node = node[key] if isinstance(node, list) and key < len(node) else None
        else:
            node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


# ---------------------------------------------------------------- preview


@dataclass(frozen=True)
class RequestShape:
    """Where a worker sends a mapping's items and how it wraps them."""

    endpoint: ep.Endpoint
    path: str
    relationships: dict[str, Any] | None = None
    attributes: dict[str, Any] | None = None

    def body(self, items: list[dict[str, Any]]) -> bytes:
        """The exact request body for ``items``: each item serialized once, joined into the envelope."""
        return self.endpoint.envelope_bytes(
            [dumps(item) for item in items], self.relationships, self.attributes
        )


def request_shape(spec: Spec) -> RequestShape:
    """The bulk endpoint and envelope options for a mapping's target (docs/contracts.md)."""
    kind, opts, list_id = spec.target.kind, spec.options, spec.target.list_id
    if kind in (TargetKind.EVENT, TargetKind.ORDER):
        endpoint, relationships, attributes = ep.BULK_EVENTS, None, None
    elif kind is TargetKind.PROFILE:
        endpoint, relationships, attributes = (
            ep.BULK_PROFILES,
            lists_relationship([list_id] if list_id else []),
            None,
        )
    elif kind is TargetKind.SUBSCRIPTION:
        endpoint = ep.SUBSCRIBE
        relationships = list_relationship(list_id)
        attributes = subscription_options(opts.historical_import, None)
    elif kind is TargetKind.LIST_MEMBERSHIP:
        endpoint, relationships, attributes = ep.ADD_LIST_MEMBERS, None, None
    elif kind is TargetKind.CATALOG_ITEM:
        endpoint = ep.CATALOG_ITEMS_UPDATE if opts.catalog_mode == "update" else ep.CATALOG_ITEMS_CREATE
        relationships, attributes = None, None
    elif kind is TargetKind.CATALOG_VARIANT:
        endpoint, relationships, attributes = ep.CATALOG_VARIANTS_CREATE, None, None
    else:
        endpoint, relationships, attributes = ep.CATALOG_CATEGORIES_CREATE, None, None
    path = endpoint.path.replace("{id}", list_id or "{list id}")
    return RequestShape(endpoint, path, relationships, attributes)


@dataclass
class RowPreview:
    """One sample row (or grouped order): what it sends and what is wrong with it."""

    result: RowResult
    body: bytes | None  # the request body exactly as sent (None: nothing is sent)
    pretty: str | None

    @property
    def label(self) -> str:
        """``row 3 · 2 items · 1 warning`` for the row picker."""
        result = self.result
        rows = result.rows or (result.row_ref,)
        where = f"row {rows[0]}" if len(rows) == 1 else f"rows {rows[0]}–{rows[-1]}"
        count = len(result.items)
        parts = [where, f"{count} item{'s' if count != 1 else ''}"]
        if result.skipped:
            parts.append("skipped")
        elif result.errors:
            parts.append(f"{len(result.errors)} error{'s' if len(result.errors) != 1 else ''}")
        elif result.warnings:
            parts.append(f"{len(result.warnings)} warning{'s' if len(result.warnings) != 1 else ''}")
        return " · ".join(parts)

    @property
    def mark(self) -> str:
        result = self.result
        return "–" if result.skipped else "✗" if result.errors else "!" if result.warnings else "✓"


@dataclass
class Preview:
    """The studio's preview of a spec on sample rows."""

    shape: RequestShape | None = None
    rows: list[RowPreview] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)
    mapping_issues: list[Issue] = field(default_factory=list)
    mapping_error: str | None = None
    metric_names: list[str] = field(default_factory=list)
    new_metrics: list[str] = field(default_factory=list)

    def row(self, index: int) -> RowPreview | None:
        return self.rows[index] if 0 <= index < len(self.rows) else (self.rows[0] if self.rows else None)


def preview(
    spec: Spec,
    rows: Sequence[tuple[int, dict[str, Any]]],
    *,
    existing_metrics: Iterable[str] | None = None,
    now: datetime | None = None,
) -> Preview:
    """Run the mapping on sample rows: per row the request body and issues, plus dry-run counts.

    With ``existing_metrics`` (the account's cached metric names) new metrics are named and the
    200-metric limit is checked.
    """
    out = Preview()
    try:
        out.shape = request_shape(spec)
        pipeline = Pipeline(spec, now=now)
        summary = dry_run(spec, rows, existing_metrics=existing_metrics, preview_rows=len(rows) or 1, now=now)
    except ValueError as exc:
        out.mapping_error = str(exc)
        return out
    out.metric_names = pipeline.metric_names()
    out.mapping_issues = list(summary.mapping_issues)
    if existing_metrics is not None:
        out.new_metrics = summary.new_metrics
        for name in summary.new_metrics:
            out.mapping_issues.append(
                warning(
                    "new_metric",
                    f"{name} is not a metric in the Klaviyo account yet: the first event creates it, "
                    "and a misspelt name makes a second metric that flows and reports will not see",
                )
            )
    out.counts = {
        "rows": summary.rows,
        "results": len(summary.preview),
        "ok": summary.rows_ok,
        "rejected": summary.rows_rejected,
        "skipped": summary.rows_skipped,
        "items": summary.items,
    }
    for result in summary.preview:
        body = out.shape.body(result.items) if result.items else None
        pretty = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode() if body else None
        out.rows.append(RowPreview(result, body, pretty))
    return out


# Why a rule matters and what to do about it, for the studio's messages.
HINTS = {
    "date_without_time": "Set the time zone and the hour for date-only values under Options, or map a "
    "column that has a time of day.",
    "external_id_only": "Add email (or phone_number) when the source has it.",
    "no_profile_identifier": "Map a column to email, phone_number or external_id.",
    "missing_profile_identifier": "Klaviyo refuses events and profiles it cannot attach to a person.",
    "invalid_email": "Check the column mapped to email; rows with a broken address are not sent.",
    "example_address": "Test addresses are accepted but Klaviyo silently drops them.",
    "invalid_phone": "Set the phone's default region for numbers written without a country code.",
    "value_not_numeric": "Add the number transform to the value field.",
    "invalid_currency": "Map a column with ISO codes (USD, EUR) or set the currency under Options.",
    "required_missing": "Fill the column in the source, give the field a default, or untick required.",
    "order_not_adjacent": "Runs sort order files by order id first; the sample is shown as pasted.",
    "property_name_clash": "Rename the event property so segments can use it.",
    "new_metric": "Refresh the metric list if the metric was created recently.",
    "metric_limit": "Reuse an existing metric and tell variants apart with a property.",
    "metric_limit_near": "Reuse an existing metric and tell variants apart with a property.",
    "time_out_of_range": "Check the date format and time zone of the time field.",
    "invalid_date": "Set the date format of the field (e.g. %d/%m/%Y %H:%M) or the day-first option.",
    "not_a_number": "Check the decimal separator of the number transform.",
    "missing_order_id": "Every line row needs the order id; order columns may be blank after the first line.",
    "product_id_type": "Remove the number transform from the ProductID field.",
    "product_id_not_in_catalog": "Map ProductID from the column the catalog sync uses as external_id.",
    "product_id_missing": "Map the product's id (the catalog's external_id) to ProductID.",
}


def hints_for(spec: Spec | None) -> dict[str, str]:
    """HINTS with the phone hint naming the region this mapping reads bare numbers with."""
    if spec is None:
        return HINTS
    region = (spec.options.default_phone_region or "US").upper()
    return {
        **HINTS,
        "invalid_phone": f"Numbers without a +country code are read as {region} numbers (the mapping's "
        "phone region under Options, unless the field sets its own); change it if they come from "
        "elsewhere.",
    }


# ---------------------------------------------------------------- the studio


@dataclass(frozen=True)
class SampleChoice:
    """Which sample the studio previews with: an upload, or pasted text."""

    upload_id: int | None = None
    text: str = ""

    def as_json(self) -> str:
        return orjson.dumps({"upload_id": self.upload_id, "text": self.text}).decode()


def _sample_key(user_id: int | None, mapping_id: int) -> str:
    return f"console:studio-sample:{user_id or 0}:{mapping_id}"


async def remember_sample(redis: Redis, user_id: int | None, mapping_id: int, choice: SampleChoice) -> None:
    """Keep a person's sample for a mapping for a day, so the studio reopens with it (best effort)."""
    if len(choice.text.encode()) <= SAMPLE_MAX_BYTES:
        with contextlib.suppress(RedisError, OSError):
            await redis.set(_sample_key(user_id, mapping_id), choice.as_json(), ex=SAMPLE_TTL_SECONDS)


async def recall_sample(redis: Redis, user_id: int | None, mapping_id: int) -> SampleChoice:
    try:
        raw = await redis.get(_sample_key(user_id, mapping_id))
    except (RedisError, OSError):
        raw = None
    if not raw:
        return SampleChoice()
    data = orjson.loads(raw)
    return SampleChoice(data.get("upload_id"), data.get("text") or "")


def choice_from_form(form: Any) -> SampleChoice:
    """The sample fields of a studio or new-mapping form."""
    upload = str(form.get("sample_upload") or "").strip()
    return SampleChoice(int(upload) if upload.isdigit() else None, str(form.get("sample_text") or ""))


async def load_sample(db: AsyncSession, choice: SampleChoice) -> Sample:
    """Rows for a sample choice (an upload that is gone or not ready gives an empty sample)."""
    if choice.upload_id is not None:
        upload = await db.get(Upload, choice.upload_id)
        if upload is None or upload.status != UploadStatus.READY:
            return Sample(problems=["that upload is gone or not analysed yet; pick another sample"])
        return sample_from_upload(upload)
    return sample_from_text(choice.text)


@dataclass(frozen=True)
class FieldNote:
    """What one field rule reads from the chosen sample row and what it becomes."""

    raw: str
    value: str
    error: str | None = None
    missing: bool = False  # the sample has no such column (fine when other files have it)


@dataclass
class Studio:
    """Everything the studio page and its preview show."""

    spec: Spec | None
    sample: Sample
    choice: SampleChoice
    metrics: MetricCache
    preview: Preview = field(default_factory=Preview)
    row_index: int = 0
    notes: list[FieldNote] = field(default_factory=list)
    form_errors: list[str] = field(default_factory=list)
    suggestions: list[tuple[str, presets.Suggestion]] = field(default_factory=list)
    # Column -> the targets the mapping already sends it to (the columns table says where each goes).
    mapped_to: dict[str, list[str]] = field(default_factory=dict)

    @property
    def current(self) -> RowPreview | None:
        return self.preview.row(self.row_index)

    @property
    def noun(self) -> str:
        return ITEM_NOUNS.get(self.spec.target.kind.value, "items") if self.spec else "items"


def build_studio(
    spec: Spec | None,
    sample: Sample,
    choice: SampleChoice,
    metrics: MetricCache,
    *,
    row_index: int = 0,
    form_errors: Sequence[str] = (),
    now: datetime | None = None,
) -> Studio:
    """Preview ``spec`` on ``sample``: request bodies, issues, per-field values, header suggestions."""
    studio = Studio(spec, sample, choice, metrics, row_index=max(row_index, 0), form_errors=list(form_errors))
    if spec is None:
        return studio
    existing = metrics.names if metrics.loaded else None
    studio.preview = preview(spec, sample.rows, existing_metrics=existing, now=now)
    if studio.row_index >= len(studio.preview.rows):
        studio.row_index = 0
    current = studio.current
    if current is not None and not studio.preview.mapping_error:
        rows = dict(sample.rows)
        studio.notes = field_notes(spec, rows.get(current.result.row_ref, {}), sample.columns)
    mapped = set(spec.source_columns())
    for rule in spec.fields:
        if rule.source.kind == "column":
            studio.mapped_to.setdefault(rule.source.column, []).append(rule.target)
    suggested = presets.suggest_targets(sample.columns, spec.target.kind)
    taken = set(spec.targets())
    studio.suggestions = [
        (name, hint)
        for name, hint in suggested.items()
        if hint and name not in mapped and hint.target not in taken
    ]
    return studio


def field_notes(spec: Spec, row: dict[str, Any], columns: Sequence[str] = ()) -> list[FieldNote]:
    """Per field rule: the raw sample value and the value after transforms (or why it fails)."""
    notes = []
    known = set(columns)
    compiled = compile_mapping(spec)
    for rule, compiled_field in zip(spec.fields, compiled.fields, strict=True):
        if known and rule.source.kind == "column" and rule.source.column not in known:
            notes.append(FieldNote("", "", f"the sample has no column {rule.source.column!r}", missing=True))
            continue
        raw = _show(sample_value(row, rule))
        try:
            value = compiled_field.read(row, [])
        except RuleError as exc:
            notes.append(FieldNote(raw, "", exc.message))
            continue
        except SkipRow:
            notes.append(FieldNote(raw, "empty: the row is skipped"))
            continue
        shown = "(empty)" if value is EMPTY or value is DROPPED or value is None else _show(value)
        notes.append(FieldNote(raw, shown))
    return notes


def _show(value: Any) -> str:
    if value is None or value == "":
        return "(empty)"
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= 80 else text[:77] + "…"


KIND_LABELS = {
    "event": "Event",
    "order": "Order (line rows grouped)",
    "profile": "Profile",
    "catalog_item": "Catalog item",
    "catalog_variant": "Catalog variant",
    "catalog_category": "Catalog category",
    "subscription": "Subscription",
    "list_membership": "List membership",
}
ITEM_NOUNS = {
    "event": "events",
    "order": "events",
    "profile": "profiles",
    "catalog_item": "catalog items",
    "catalog_variant": "catalog variants",
    "catalog_category": "catalog categories",
    "subscription": "subscriptions",
    "list_membership": "list members",
}
