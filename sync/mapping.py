"""The versionable Mapping spec: what a source row becomes in Klaviyo (pydantic, JSON round-trips)."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from sync.row_filters import RowFilter
from sync.transforms import zone

SCHEMA_VERSION = 1
Channel = Literal["email", "sms"]


class TargetKind(StrEnum):
    """What one row (or one grouped order) turns into."""

    EVENT = "event"
    ORDER = "order"
    PROFILE = "profile"
    CATALOG_ITEM = "catalog_item"
    CATALOG_VARIANT = "catalog_variant"
    CATALOG_CATEGORY = "catalog_category"
    SUBSCRIPTION = "subscription"
    LIST_MEMBERSHIP = "list_membership"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- sources


class ColumnSource(_Spec):
    """A CSV column (or top-level key of a JSON record), matched exactly."""

    kind: Literal["column"] = "column"
    column: str


class PathSource(_Spec):
    """A path into a nested record: ``customer.email``, ``line_items[0].sku``; alternatives separated by
    ``|`` are tried in order (``timestamp | originalTimestamp``): the first non-empty one is read."""

    kind: Literal["path"] = "path"
    path: str

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        for alternative in path_alternatives(value):
            parse_path(alternative)
        return value


class ConstantSource(_Spec):
    """The same value on every row."""

    kind: Literal["constant"] = "constant"
    value: JsonValue


class TemplateSource(_Spec):
    """Text built from columns: ``{OrderId}_{SKU}``; ``{{`` and ``}}`` are literal braces.

    A field may also be a path with alternatives (``{properties.cart_id | properties.order_id}``), and
    ``:unix`` after it writes a date as UNIX seconds (``{timestamp:unix}``)."""

    kind: Literal["template"] = "template"
    template: str

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str) -> str:
        if not template_fields(value):
            raise ValueError("a template needs at least one {column}")
        return value


Source = Annotated[ColumnSource | PathSource | ConstantSource | TemplateSource, Field(discriminator="kind")]


# ---------------------------------------------------------------- transforms


class Trim(_Spec):
    """Strip surrounding whitespace."""

    op: Literal["trim"] = "trim"


class Lower(_Spec):
    """Lower-case text."""

    op: Literal["lower"] = "lower"


class Email(_Spec):
    """Trim, lower-case and check an email address."""

    op: Literal["email"] = "email"


class NumberCast(_Spec):
    """Cast to a number; ``decimal`` forces "." or "," as the decimal separator."""

    op: Literal["number"] = "number"
    decimal: Literal["auto", ".", ","] = "auto"


class IntegerCast(_Spec):
    """Cast to a whole number."""

    op: Literal["integer"] = "integer"
    decimal: Literal["auto", ".", ","] = "auto"


class BooleanCast(_Spec):
    """Read yes/no, true/false, 1/0 as a boolean."""

    op: Literal["boolean"] = "boolean"


class Split(_Spec):
    """Split text into a list of strings."""

    op: Literal["split"] = "split"
    separator: str = ","


class DateParse(_Spec):
    """Parse a date into ISO 8601 UTC; unset fields fall back to the mapping options."""

    op: Literal["date"] = "date"
    format: str | None = None
    timezone: str | None = None
    dayfirst: bool | None = None
    date_only_hour: int | None = Field(default=None, ge=0, le=23)


class Phone(_Spec):
    """Normalise a phone number to E.164; ``region`` defaults to the mapping's default region."""

    op: Literal["phone"] = "phone"
    region: str | None = None


class MapObjects(_Spec):
    """Rename the keys of an object or of each object in a list, dropping other keys.

    For nested source arrays such as a tracking spec's ``products`` -> Klaviyo's ``Items``;
    ``numbers`` lists output keys cast to numbers and ``lists`` output keys split into lists.
    """

    op: Literal["map_objects"] = "map_objects"
    keys: dict[str, str]
    numbers: list[str] = Field(default_factory=list)
    lists: list[str] = Field(default_factory=list)


class MapValues(_Spec):
    """Listed source values -> target values ("continue" -> 0, "yes" -> true, "Germany" -> "DE").

    Source values match ignoring case and surrounding spaces; an unlisted value becomes ``default``,
    or stays as it is when ``keep_unlisted`` (then later transforms check it).
    """

    op: Literal["map_values"] = "map_values"
    values: dict[str, JsonValue] = Field(default_factory=dict)
    # Values not listed go through a preset translation first (see sync.value_maps.PRESETS).
    preset: Literal["yes_no", "inventory_policy", "country_code"] | None = None
    default: JsonValue = None
    keep_unlisted: bool = True

    @model_validator(mode="after")
    def _something_to_map(self) -> MapValues:
        if not self.values and self.preset is None:
            raise ValueError("a value map needs at least one listed value or a preset")
        return self


Transform = Annotated[
    Trim
    | Lower
    | Email
    | NumberCast
    | IntegerCast
    | BooleanCast
    | Split
    | DateParse
    | Phone
    | MapObjects
    | MapValues,
    Field(discriminator="op"),
]


# ---------------------------------------------------------------- rules and options


class FieldRule(_Spec):
    """One output field: where its value comes from, how it is cleaned, where it goes.

    ``target`` names a Klaviyo attribute (``email``, ``phone_number``, ``external_id``, ``time``,
    ``value``, ``value_currency``, ``unique_id``), an event property (``properties.<name>``, dots
    nest), a profile attribute on events (``profile.first_name``, ``profile.properties.<name>``),
    or, for orders, a line-item field (``item.<name>``). Profiles and catalog targets use the
    resource's attribute names (``first_name``, ``location.city``, ``properties.<name>``, ``title``).
    """

    source: Source
    target: str = Field(min_length=1)
    transforms: list[Transform] = Field(default_factory=list)
    default: JsonValue = None
    required: bool = False
    skip_row_when_empty: bool = False

    @field_validator("target")
    @classmethod
    def _check_target(cls, value: str) -> str:
        if value.startswith(".") or value.endswith(".") or ".." in value:
            raise ValueError(f"target {value!r} has an empty name between dots")
        return value


def _email_only() -> list[Channel]:
    return ["email"]


class MappingOptions(_Spec):
    """Run-wide choices; per-field transforms may override the defaults."""

    backfill: bool = True
    default_currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    default_phone_region: str = "US"
    default_timezone: str = "UTC"
    date_only_hour: int = Field(default=0, ge=0, le=23)
    dayfirst: bool = False
    # Profiles: an empty cell leaves the field unchanged unless clear_empty sends null.
    clear_empty: bool = False
    drop_invalid_phone: bool = False
    # Orders: the grouped order's metric and the per-line metric (None: no line events).
    order_metric: str = "Placed Order"
    line_metric: str | None = "Ordered Product"
    # Subscriptions: channels to subscribe and whether this is a historical import.
    channels: list[Channel] = Field(default_factory=_email_only)
    historical_import: bool = False
    # With "sms" in channels: also SMS transactional consent (order and shipping texts).
    sms_transactional: bool = False
    # Catalog: "create" items carry no id; "update" items carry the compound id.
    catalog_mode: Literal["create", "update"] = "create"

    # Orders from JSON feeds: the path of the line-item array inside each order record; each element
    # becomes one line row, readable under the source path ``line`` (``line.sku``, ``line.price``).
    line_items_path: str | None = None

    @field_validator("default_timezone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        zone(value)
        return value

    @field_validator("line_items_path")
    @classmethod
    def _check_line_path(cls, value: str | None) -> str | None:
        if value is not None:
            parse_path(value)
        return value


class Target(_Spec):
    """The kind of Klaviyo object and, for events, the metric name."""

    kind: TargetKind
    metric: str | None = Field(default=None, max_length=128)
    list_id: str | None = None

    @model_validator(mode="after")
    def _metric_for_events(self) -> Target:
        if self.kind is TargetKind.EVENT and not (self.metric and self.metric.strip()):
            raise ValueError("an event mapping needs a metric name")
        return self


class Mapping(_Spec):
    """A named, versioned mapping from source rows to one Klaviyo target."""

    schema_version: int = SCHEMA_VERSION
    name: str = Field(min_length=1, max_length=200)
    version: int = Field(default=1, ge=1)
    target: Target
    options: MappingOptions = Field(default_factory=MappingOptions)
    fields: list[FieldRule] = Field(min_length=1)
    # Rows failing any filter are skipped ("skipped by filter"), never counted as failures.
    filters: list[RowFilter] = Field(default_factory=list)

    def to_json(self) -> str:
        """Canonical JSON for storage and export."""
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> Mapping:
        """Import a mapping exported by ``to_json`` (validates everything)."""
        return cls.model_validate_json(text)

    def targets(self) -> list[str]:
        """The target of every field rule, in order."""
        return [rule.target for rule in self.fields]

    def source_columns(self) -> list[str]:
        """Every column the mapping reads (columns, template fields, first path segment)."""
        columns: list[str] = []
        for rule in self.fields:
            src = rule.source
            if isinstance(src, ColumnSource):
                columns.append(src.column)
            elif isinstance(src, TemplateSource):
                columns.extend(template_fields(src.template))
            elif isinstance(src, PathSource):
                columns.extend(str(parse_path(path)[0]) for path in path_alternatives(src.path))
        return list(dict.fromkeys(columns))


# ---------------------------------------------------------------- path and template syntax

_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_TEMPLATE_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]+)\}")


def parse_path(path: str) -> tuple[str | int, ...]:
    """Split ``line_items[0].sku`` into ("line_items", 0, "sku"); ValueError when malformed."""
    parts: list[str | int] = []
    pos = 0
    while pos < len(path):
        if path[pos] == "." and parts and pos + 1 < len(path) and path[pos + 1] != ".":
            pos += 1
        match = _PATH_TOKEN.match(path, pos)
        if not match:
            raise ValueError(f"cannot read the path {path!r} at position {pos}")
        key, index = match.groups()
        parts.append(int(index) if index is not None else key)
        pos = match.end()
    if not parts or isinstance(parts[0], int):
        raise ValueError(f"the path {path!r} must start with a key")
    return tuple(parts)


def path_alternatives(path: str) -> list[str]:
    """The paths of a ``a.b | c`` source, in order of preference."""
    parts = [part.strip() for part in path.split("|")]
    if not all(parts):
        raise ValueError(f"the path {path!r} has an empty alternative between '|'")
    return parts


def template_fields(template: str) -> list[str]:
    """Column names a template refers to, in order."""
    return [m.group(1) for m in _TEMPLATE_FIELD.finditer(template) if m.group(1)]


def split_template(template: str) -> list[tuple[bool, str]]:
    """Template as (is_column, text) parts."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    for match in _TEMPLATE_FIELD.finditer(template):
        if match.start() > pos:
            parts.append((False, template[pos : match.start()]))
        token = match.group(0)
        parts.append((True, match.group(1)) if match.group(1) else (False, token[0]))
        pos = match.end()
    if pos < len(template):
        parts.append((False, template[pos:]))
    return parts


def column(name: str, target: str, *transforms: Any, **extra: Any) -> FieldRule:
    """Shorthand used by presets and tests: a column rule."""
    return FieldRule(source=ColumnSource(column=name), target=target, transforms=list(transforms), **extra)
