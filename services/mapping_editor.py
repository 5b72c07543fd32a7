"""The studio's editor form and the mapping spec, both ways: spec -> rows to render, form -> spec.

A rule row shows one source, one target and one "main" transform with its parameters; anything the
form has no widget for (a second transform, map_objects, a typed constant) rides along in hidden JSON
so that opening and saving a mapping never loses part of it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from sync.mapping import Mapping as Spec
from sync.mapping import MappingOptions, MapValues, TargetKind, Transform
from sync.presets import ITEM_PROPERTIES, STANDARD_METRICS, suggest_targets
from sync.row_filters import OP_LABELS
from sync.targets.catalog import CATEGORY_FIELDS, ITEM_FIELDS, VARIANT_FIELDS
from sync.targets.profiles import ALLOWED as PROFILE_TARGETS
from sync.targets.subscriptions import ALLOWED as SUBSCRIPTION_TARGETS
from sync.value_maps import PRESETS as VALUE_MAP_PRESETS

TARGET_HINTS = {
    TargetKind.EVENT: "email, time, value… or properties.<Name>",
    TargetKind.ORDER: "email, time, value… properties.<Name>, or item.<Name> for line fields",
    TargetKind.PROFILE: "email, first_name, location.city… or properties.<Name>",
    TargetKind.SUBSCRIPTION: "email, phone_number, consent.email, consent.sms, consented_at",
    TargetKind.LIST_MEMBERSHIP: "email, phone_number or id",
    TargetKind.CATALOG_ITEM: "external_id, title, price, image_full_url… or custom_metadata.<name>",
    TargetKind.CATALOG_VARIANT: "external_id, sku, inventory_quantity… or custom_metadata.<name>",
    TargetKind.CATALOG_CATEGORY: "external_id, name",
}
SOURCE_KINDS = {"column": "column", "path": "JSON path", "constant": "constant", "template": "template"}
# The transforms a row edits directly; the order is the order of the dropdown.
TRANSFORMS = {
    "": "as is",
    "trim": "trim spaces",
    "lower": "lower-case",
    "email": "email (trim, lower-case)",
    "number": "number",
    "integer": "integer",
    "boolean": "boolean (yes/no)",
    "split": "split into a list",
    "date": "date → ISO time (UTC)",
    "phone": "phone → E.164",
}
COMMON_ZONES = (
    "UTC", "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles",
    "America/Toronto", "America/Sao_Paulo", "Europe/London", "Europe/Berlin", "Europe/Paris",
    "Europe/Madrid", "Europe/Amsterdam", "Australia/Sydney", "Asia/Tokyo", "Asia/Singapore",
)  # fmt: skip
_NUMBER_TARGETS = ("value", "price", "inventory_quantity", "inventory_policy")


# A submitted form with ``get`` and ``getall`` (Litestar's FormMultiDict, or a multidict in tests).
FormLike = Any


class FormErrors(ValueError):
    """The form does not make a valid mapping; ``messages`` name the field or option at fault."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


@dataclass
class RuleRow:
    """One field rule as the editor shows it (all text, as in the form)."""

    key: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    source_kind: str = "column"
    source: str = ""
    source_json: bool = False  # a constant that is not text (number, boolean, list...)
    target: str = ""
    op: str = ""
    decimal: str = "auto"
    separator: str = ","
    date_format: str = ""
    timezone: str = ""
    date_only_hour: str = ""
    dayfirst: str = ""
    region: str = ""
    default: str = ""
    default_json: bool = False
    required: bool = False
    skip: bool = False
    # Value map: one "source = target" per line, a preset for unlisted values, a default for the rest.
    vmap: str = ""
    vmap_preset: str = ""
    vmap_default: str = ""
    more: str = ""  # JSON list of transforms the row has no widget for, applied after the main one

    @property
    def extra_ops(self) -> list[str]:
        return [str(t.get("op")) for t in json.loads(self.more)] if self.more else []


# ---------------------------------------------------------------- spec -> rows


def rows_from_spec(spec: Spec) -> list[RuleRow]:
    """Editor rows for every field rule of ``spec``."""
    rows = []
    for rule in spec.fields:
        row = RuleRow(target=rule.target, required=rule.required, skip=rule.skip_row_when_empty)
        src = rule.source.model_dump()
        row.source_kind = src["kind"]
        raw = src.get("column", src.get("path", src.get("template", src.get("value"))))
        row.source_json = row.source_kind == "constant" and not isinstance(raw, str)
        row.source = json.dumps(raw) if row.source_json else str(raw if raw is not None else "")
        if rule.default is not None:
            row.default_json = not isinstance(rule.default, str)
            row.default = json.dumps(rule.default) if row.default_json else str(rule.default)
        transforms = list(rule.transforms)
        value_map = next((t for t in transforms if isinstance(t, MapValues)), None)
        if value_map is not None:
            transforms.remove(value_map)
            _load_value_map(row, value_map)
        if transforms and transforms[0].op in TRANSFORMS:
            _load_main(row, transforms.pop(0))
        if transforms:
            row.more = json.dumps([t.model_dump() for t in transforms])
        rows.append(row)
    return rows


def _load_value_map(row: RuleRow, value_map: MapValues) -> None:
    row.vmap = "\n".join(f"{source} = {json.dumps(target)}" for source, target in value_map.values.items())
    row.vmap_preset = value_map.preset or ""
    row.vmap_default = "" if value_map.default is None else json.dumps(value_map.default)


def _value_map(get: Any) -> dict[str, Any] | None:
    """The row's value map from its text ("yes = true" per line), preset and default; None if unset."""
    values: dict[str, Any] = {}
    for line in get("vmap").splitlines():
        source, sep, target = line.partition("=")
        if not sep:
            source, sep, target = line.partition("→")
        if sep and source.strip():
            values[source.strip()] = _json_or_text(target.strip())
    preset = get("vmap_preset") or None
    if not values and preset is None:
        return None
    default = get("vmap_default")
    return {
        "op": "map_values",
        "values": values,
        "preset": preset,
        "default": _json_or_text(default) if default else None,
    }


def filter_rows(spec: Spec | None) -> list[dict[str, str]]:
    """The studio's filter rows: every filter of ``spec``, then one blank row to add another."""
    rows = [
        {
            "column": f.column,
            "op": f.op,
            "value": ", ".join(f.values) if f.op == "one_of" else (f.value or ""),
        }
        for f in (spec.filters if spec else [])
    ]
    return [*rows, {"column": "", "op": "truthy", "value": ""}]


def _filters(form: FormLike) -> list[dict[str, Any]]:
    columns = [str(v).strip() for v in form.getall("flt-column", [])]
    ops = [str(v) for v in form.getall("flt-op", [])]
    values = [str(v).strip() for v in form.getall("flt-value", [])]
    out: list[dict[str, Any]] = []
    for index, name in enumerate(columns):
        if not name:
            continue
        op = ops[index] if index < len(ops) else "truthy"
        value = values[index] if index < len(values) else ""
        entry: dict[str, Any] = {"column": name, "op": op}
        if op == "one_of":
            entry["values"] = [v.strip() for v in value.split(",") if v.strip()]
        elif op in ("equals", "not_equals"):
            entry["value"] = value
        out.append(entry)
    return out


def _load_main(row: RuleRow, transform: Transform) -> None:
    data = transform.model_dump()
    row.op = data["op"]
    row.decimal = data.get("decimal", "auto")
    row.separator = data.get("separator", ",")
    row.date_format = data.get("format") or ""
    row.timezone = data.get("timezone") or ""
    hour = data.get("date_only_hour")
    row.date_only_hour = "" if hour is None else str(hour)
    dayfirst = data.get("dayfirst")
    row.dayfirst = "" if dayfirst is None else str(dayfirst).lower()
    row.region = data.get("region") or ""


def blank_row(column: str = "", target: str = "", transforms: Iterable[Transform] = ()) -> RuleRow:
    """A new row, e.g. from a header suggestion."""
    row = RuleRow(source=column, target=target)
    rest = list(transforms)
    value_map = next((t for t in rest if isinstance(t, MapValues)), None)
    if value_map is not None:
        rest.remove(value_map)
        _load_value_map(row, value_map)
    if rest and rest[0].op in TRANSFORMS:
        _load_main(row, rest.pop(0))
    if rest:
        row.more = json.dumps([t.model_dump() for t in rest])
    return row


# ---------------------------------------------------------------- form -> spec


def _text(form: FormLike, key: str) -> str:
    values = form.getall(key, [])
    return str(values[-1]).strip() if values else ""


def _flag(form: FormLike, key: str) -> bool | None:
    """Checkboxes come with a hidden "0" before them: the last value wins, absence means "not shown"."""
    values = form.getall(key, [])
    return None if not values else str(values[-1]) in ("1", "on", "true")


def _rule_dict(form: FormLike, key: str) -> dict[str, Any]:
    def get(name: str) -> str:
        return _text(form, f"f-{key}-{name}")

    kind = get("source_kind") or "column"
    raw = form.getall(f"f-{key}-source", [""])[-1]  # keep a constant's spaces as typed
    text = str(raw) if kind == "constant" else str(raw).strip()
    source: dict[str, Any] = {"kind": kind}
    if kind == "constant":
        source["value"] = _json_or_text(text) if get("source_json") == "1" else text
    else:
        source[{"column": "column", "path": "path", "template": "template"}.get(kind, "column")] = text
    op = get("op")
    transforms: list[dict[str, Any]] = []
    value_map = _value_map(get)
    if value_map is not None:
        transforms.append(value_map)  # first: later transforms check what it gives
    if op:
        transforms.append(_main_transform(op, get))
    more = get("more")
    if more:
        transforms.extend(json.loads(more))
    rule: dict[str, Any] = {
        "source": source,
        "target": get("target"),
        "transforms": transforms,
        "required": _flag(form, f"f-{key}-required") or False,
        "skip_row_when_empty": _flag(form, f"f-{key}-skip") or False,
    }
    default = get("default")
    if default:
        rule["default"] = _typed_default(default, op, rule["target"], get("default_json") == "1")
    return rule


def _main_transform(op: str, get: Any) -> dict[str, Any]:
    transform: dict[str, Any] = {"op": op}
    if op in ("number", "integer"):
        transform["decimal"] = get("decimal") or "auto"
    elif op == "split":
        transform["separator"] = get("separator") or ","
    elif op == "date":
        transform["format"] = get("date_format") or None
        transform["timezone"] = get("timezone") or None
        transform["date_only_hour"] = get("date_only_hour") or None
        dayfirst = get("dayfirst")
        transform["dayfirst"] = None if not dayfirst else dayfirst == "true"
    elif op == "phone":
        transform["region"] = get("region").upper() or None
    return transform


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _typed_default(text: str, op: str, target: str, was_json: bool) -> Any:
    """A default is sent as is (no transform runs on it), so give numbers and booleans their type."""
    if was_json:
        return _json_or_text(text)
    if op in ("number", "integer") or target in _NUMBER_TARGETS:
        try:
            number = float(text.replace(",", "."))
        except ValueError:
            return text
        return int(number) if number.is_integer() and op != "number" else number
    if op == "boolean" and text.lower() in ("true", "false", "yes", "no", "1", "0"):
        return text.lower() in ("true", "yes", "1")
    return text


_OPTION_TEXT = (
    "default_currency",
    "default_timezone",
    "default_phone_region",
    "order_metric",
    "catalog_mode",
)
_OPTION_FLAGS = ("backfill", "dayfirst", "clear_empty", "drop_invalid_phone", "historical_import")


def spec_from_form(form: FormLike) -> Spec:
    """The mapping the studio form describes; FormErrors lists every problem by field."""
    kind = _text(form, "kind")
    try:
        base_options = json.loads(_text(form, "base_options") or "{}")
    except ValueError:
        base_options = {}
    options = dict(base_options)
    for name in _OPTION_TEXT:
        if form.getall(f"opt-{name}", []):
            options[name] = _text(form, f"opt-{name}") or None
    if options.get("default_currency"):
        options["default_currency"] = str(options["default_currency"]).upper()
    if options.get("default_phone_region"):
        options["default_phone_region"] = str(options["default_phone_region"]).upper()
    for name in ("default_timezone", "default_phone_region", "order_metric"):
        if options.get(name) is None:
            options.pop(name, None)  # back to the spec's default
    if form.getall("opt-line_metric", []):
        options["line_metric"] = _text(form, "opt-line_metric") or None
    if form.getall("opt-date_only_hour", []):
        options["date_only_hour"] = _text(form, "opt-date_only_hour") or 0
    for name in _OPTION_FLAGS:
        flag = _flag(form, f"opt-{name}")
        if flag is not None:
            options[name] = flag
    if form.getall("opt-channels-shown", []):
        options["channels"] = [str(c) for c in form.getall("opt-channels", [])]
    keys = [str(k) for k in form.getall("rule", [])]
    target: dict[str, Any] = {"kind": kind}
    if _text(form, "metric"):
        target["metric"] = _text(form, "metric")
    if _text(form, "list_id"):
        target["list_id"] = _text(form, "list_id")
    data = {
        "name": _text(form, "name"),
        "target": target,
        "options": options,
        "fields": [_rule_dict(form, key) for key in keys],
        "filters": _filters(form),
    }
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise FormErrors(explain_validation(exc, data)) from None


def explain_validation(exc: ValidationError, data: dict[str, Any] | None = None) -> list[str]:
    """Pydantic errors as sentences that name the field rule or option at fault."""
    messages = []
    fields = (data or {}).get("fields") or []
    for error in exc.errors():
        loc = list(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "string_pattern_mismatch" and loc[-1] == "default_currency":
            message = "must be a three-letter ISO currency code such as USD"
        elif error["type"] == "missing":
            message = "is missing"
        where = _where(loc, fields)
        messages.append(f"{where}: {message}" if where else message)
    return list(dict.fromkeys(messages))


def _where(loc: list[Any], fields: list[dict[str, Any]]) -> str:
    if not loc:
        return ""
    if loc[0] == "fields" and len(loc) > 1 and isinstance(loc[1], int):
        index = loc[1]
        label = f"Field {index + 1}"
        if index < len(fields):
            rule = fields[index]
            shown = rule.get("target") or next(iter((rule.get("source") or {}).values()), "")
            if shown:
                label += f" ({shown})"
        rest = [str(part) for part in loc[2:] if part not in ("column", "path", "constant", "template")]
        if rest and rest[0] == "transforms" and len(rest) > 2:
            rest = ["transform", *rest[2:]]
        return label + (" " + " ".join(rest).replace("_", " ") if rest else "")
    if loc[0] == "fields":
        return "Fields"
    if loc[0] == "filters" and len(loc) > 1 and isinstance(loc[1], int):
        return f"Filter {loc[1] + 1}"
    if loc[0] == "options" and len(loc) > 1:
        return f"Option {str(loc[1]).replace('_', ' ')}"
    if loc[0] == "target" and len(loc) > 1:
        return {"metric": "Metric name", "list_id": "List id", "kind": "Target kind"}.get(
            str(loc[1]), "Target"
        )
    top = {"name": "Name", "target": "Target", "options": "Options", "fields": "Fields"}
    if len(loc) == 1 and loc[0] in top:
        return top[str(loc[0])]
    return ".".join(str(part) for part in loc)


# ---------------------------------------------------------------- what the dropdowns offer


def target_choices(kind: TargetKind, metric: str | None = None) -> list[str]:
    """Targets the kind's builder accepts, with the standard property names of its metric."""
    if kind in (TargetKind.EVENT, TargetKind.ORDER):
        out = ["email", "phone_number", "external_id", "time", "value", "value_currency", "unique_id"]
        out += ["profile.first_name", "profile.last_name", "profile.properties."]
        if kind is TargetKind.ORDER:
            preset = STANDARD_METRICS.get(metric or "Placed Order") or STANDARD_METRICS["Placed Order"]
            out += [f"properties.{name}" for name in preset.properties if name != "Items"]
            out += [f"item.{name}" for name in ITEM_PROPERTIES]
        else:
            found = STANDARD_METRICS.get(metric or "")
            out += [f"properties.{name}" for name in (found.properties if found else ())]
        return [*out, "properties."]
    if kind is TargetKind.PROFILE:
        return [*sorted(PROFILE_TARGETS), "properties."]
    if kind is TargetKind.SUBSCRIPTION:
        return sorted(SUBSCRIPTION_TARGETS)
    if kind is TargetKind.LIST_MEMBERSHIP:
        return ["email", "id", "phone_number"]
    fields = {
        TargetKind.CATALOG_ITEM: ITEM_FIELDS,
        TargetKind.CATALOG_VARIANT: VARIANT_FIELDS,
        TargetKind.CATALOG_CATEGORY: CATEGORY_FIELDS,
    }[kind]
    return [*sorted(fields), "custom_metadata."]


def options_shown(kind: TargetKind) -> set[str]:
    """Which options the studio offers for a target kind (others keep their stored values)."""
    shown = {"default_timezone", "date_only_hour", "dayfirst", "default_phone_region"}
    if kind in (TargetKind.EVENT, TargetKind.ORDER):
        shown |= {"backfill", "default_currency"}
    if kind is TargetKind.ORDER:
        shown |= {"order_metric", "line_metric"}
    if kind in (TargetKind.PROFILE, TargetKind.SUBSCRIPTION):
        shown |= {"drop_invalid_phone"}
    if kind is TargetKind.PROFILE:
        shown |= {"clear_empty", "list_id"}
    if kind is TargetKind.SUBSCRIPTION:
        shown |= {"channels", "historical_import", "list_id"}
    if kind is TargetKind.LIST_MEMBERSHIP:
        shown |= {"list_id"}
    if kind is TargetKind.CATALOG_ITEM:
        shown |= {"catalog_mode"}
    return shown


def base_options_json(options: MappingOptions) -> str:
    """The stored options, carried in the form so options the page does not show survive a save."""
    return options.model_dump_json()


def editor_context(kind: TargetKind | str, metric: str | None = None) -> dict[str, Any]:
    """What the editor templates need to draw rows and options for a target kind."""
    kind = TargetKind(kind)
    return {
        "source_kinds": SOURCE_KINDS,
        "transforms": TRANSFORMS,
        "zones": COMMON_ZONES,
        "targets": target_choices(kind, metric),
        "filter_ops": OP_LABELS,
        "vmap_presets": VALUE_MAP_PRESETS,
        "target_hint": TARGET_HINTS.get(kind, ""),
        "shown": options_shown(kind),
        "kind": kind.value,
    }


def suggested_row(kind: str, column: str, target: str) -> RuleRow:
    """A new editor row; for a header with a known meaning, the transforms its suggestion carries."""
    try:
        hint = suggest_targets([column], TargetKind(kind)).get(column) if column else None
    except ValueError:
        hint = None
    if hint is not None and (not target or target == hint.target):
        return blank_row(column, hint.target, hint.transforms)
    return blank_row(column, target)
