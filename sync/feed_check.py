"""Does a mapping fit a feed's records? Fields it requires that the records lack refuse the feed.

Used by "Test feed" before a schedule is saved and by every tick before its run is created, so a
feed without order times or lines never sends half-empty live events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sync.mapping import (
    ColumnSource,
    FieldRule,
    Mapping,
    PathSource,
    TargetKind,
    TemplateSource,
    parse_path,
    path_alternatives,
    template_fields,
)

SAMPLE = 200  # records looked at: enough to see optional fields, cheap on every tick
_IDENTIFIERS = (
    "email",
    "phone_number",
    "external_id",
    "profile.email",
    "profile.phone_number",
    "profile.external_id",
)


@dataclass(slots=True)
class FeedFit:
    """What a mapping needs that the records lack (errors) or may lack (warnings)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing the mapping requires is missing."""
        return not self.errors

    def message(self) -> str:
        """The refusal in one paragraph, for a tick or a form."""
        return "The feed does not fit the mapping: " + "; ".join(self.errors) + "."


def record_fields(records: Iterable[dict[str, Any]], limit: int = 60) -> list[str]:
    """Dotted paths of the values records carry (nested objects walked, arrays as ``name[0]``)."""
    seen: dict[str, None] = {}

    def walk(value: Any, prefix: str, depth: int) -> None:
        if len(seen) >= limit or depth > 3:
            return
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{prefix}.{key}" if prefix else str(key), depth + 1)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            walk(value[0], f"{prefix}[0]", depth + 1)
        elif prefix:
            seen.setdefault(prefix, None)

    for record in records:
        walk(record, "", 0)
    return list(seen)


def _value(record: Any, keys: Sequence[str | int]) -> Any:
    node = record
    for key in keys:
        if isinstance(key, int):
            if not isinstance(node, list) or key >= len(node):
                return None
            node = node[key]
        elif isinstance(node, dict):
            node = node.get(key)
        else:
            return None
    return node


def _filled(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip()) and value != []


def _rows(mapping: Mapping, records: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """The rows the pipeline reads: each order line as ``line`` beside its record; whether lines exist."""
    lines_path = mapping.options.line_items_path
    if not lines_path:
        return list(records), True
    keys = parse_path(lines_path)
    rows: list[dict[str, Any]] = []
    any_lines = False
    for record in records:
        lines = _value(record, keys)
        if isinstance(lines, list) and lines:
            any_lines = True
            rows.extend({**record, "line": line} for line in lines)
        else:
            rows.append(record)
    return rows, any_lines


def _present(rule: FieldRule, rows: Sequence[dict[str, Any]]) -> bool | None:
    """Whether any row has a value for the rule's source (None: a constant, always there)."""
    source = rule.source
    if isinstance(source, ColumnSource):
        return any(_filled(row.get(source.column)) for row in rows)
    if isinstance(source, PathSource):
        return any(_has(row, source.path) for row in rows)
    if isinstance(source, TemplateSource):
        names = template_fields(source.template)
        return any(all(_filled(row.get(name)) or _has(row, name) for name in names) for row in rows)
    return None


def _has(row: dict[str, Any], path: str) -> bool:
    """Whether the row has a value at the path, or at any of its ``a | b`` alternatives."""
    try:
        alternatives = path_alternatives(path)
    except ValueError:
        return False
    return any(_filled(_value(row, parse_path(alternative))) for alternative in alternatives)


def _where(rule: FieldRule) -> str:
    source = rule.source
    if isinstance(source, ColumnSource):
        return source.column
    if isinstance(source, PathSource):
        return source.path
    if isinstance(source, TemplateSource):
        return source.template
    return "a constant"


def check_records(
    mapping: Mapping, records: Sequence[dict[str, Any]], *, received_time: bool = False
) -> FeedFit:
    """Check ``mapping`` against a feed's records; ``received_time`` lets events go without a time."""
    sample = list(records[:SAMPLE])
    fit = FeedFit(fields=record_fields(sample))
    if not sample:
        fit.warnings.append("the feed answered no records, so nothing could be checked")
        return fit
    rows, any_lines = _rows(mapping, sample)
    kind = mapping.target.kind
    missing: dict[str, FieldRule] = {}
    for rule in mapping.fields:
        if _present(rule, rows) is False:
            missing[rule.target] = rule
    targets = set(mapping.targets())

    def need(target: str, what: str) -> None:
        if target in missing:
            fit.errors.append(f"{what} ({target}) reads {_where(missing.pop(target))!r}, which no record has")
        elif target not in targets:
            fit.errors.append(f"the mapping has no field for {what} ({target})")

    if kind in (TargetKind.EVENT, TargetKind.ORDER):
        if received_time:
            missing.pop("time", None)
        else:
            need("time", "the time of each event")
        mapped_ids = [t for t in _IDENTIFIERS if t in targets]
        if mapped_ids and all(t in missing for t in mapped_ids):
            names = ", ".join(repr(_where(missing.pop(t))) for t in mapped_ids)
            fit.errors.append(f"no record has a profile identifier (email, phone or external id: {names})")
    if kind is TargetKind.ORDER:
        need("properties.OrderId", "the order id")
        line_rules = [r for r in mapping.fields if r.target.startswith("item.")]
        if mapping.options.line_items_path and not any_lines:
            where = mapping.options.line_items_path
            fit.errors.append(f"no record has order lines at {where!r}, so no order would carry Items")
            for rule in line_rules:
                missing.pop(rule.target, None)
        elif line_rules and all(r.target in missing for r in line_rules):
            names = ", ".join(repr(_where(missing.pop(r.target))) for r in line_rules)
            fit.errors.append(f"no record has any order line field ({names}), so no order would carry Items")
    if kind in (TargetKind.PROFILE, TargetKind.SUBSCRIPTION, TargetKind.LIST_MEMBERSHIP):
        ids = [t for t in ("email", "phone_number", "external_id", "id") if t in targets]
        if ids and all(t in missing for t in ids):
            names = ", ".join(repr(_where(missing.pop(t))) for t in ids)
            fit.errors.append(f"no record has a profile identifier ({names})")
    if kind.value.startswith("catalog_"):
        need("external_id", "the catalog id")
    for target, rule in list(missing.items()):
        if rule.required:
            fit.errors.append(f"{target} is marked required but no record has {_where(rule)!r}")
        else:
            fit.warnings.append(f"{target}: no record has {_where(rule)!r}; it is left out")
    return fit
