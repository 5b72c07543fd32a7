"""Turn a Mapping into plain closures once, so the per-row hot path does no pydantic or dispatch work."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping as RowMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sync import transforms as tf
from sync import value_maps
from sync.issues import Issue, MappingError, RuleError, SkipRow, warning
from sync.mapping import (
    BooleanCast,
    ColumnSource,
    ConstantSource,
    DateParse,
    Email,
    FieldRule,
    IntegerCast,
    Lower,
    MapObjects,
    Mapping,
    MappingOptions,
    MapValues,
    NumberCast,
    PathSource,
    Phone,
    Split,
    TargetKind,
    TemplateSource,
    Transform,
    Trim,
    parse_path,
    path_alternatives,
    split_template,
)

Row = RowMapping[str, Any]
Step = Callable[[Any, list[Issue]], Any]
Reader = Callable[[Row, list[Issue]], Any]


class _Empty:
    """Marker for "the source had no value" (kept apart from None, which means "send null")."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "EMPTY"


EMPTY: Final = _Empty()


class _Dropped:
    """Marker for "a bad value was dropped with a warning": never sent, never cleared."""

    __slots__ = ()


DROPPED: Final = _Dropped()

# Targets whose values Klaviyo needs in one shape; a matching transform is added when the rule has none.
_IMPLICIT: dict[str, Transform] = {
    "email": Email(),
    "profile.email": Email(),
    "phone_number": Phone(),
    "profile.phone_number": Phone(),
    "time": DateParse(),
    "consented_at": DateParse(),
    "value": NumberCast(),
    "price": NumberCast(),
    "inventory_quantity": NumberCast(),
    "inventory_policy": IntegerCast(),
    "published": BooleanCast(),
    "consent.email": BooleanCast(),
    "consent.sms": BooleanCast(),
    "images": Split(),
}
# Targets Klaviyo types as strings: numbers from JSON sources become text.
_TEXT_TARGETS = frozenset(
    {
        "unique_id",
        "external_id",
        "profile.external_id",
        "id",
        "sku",
        "title",
        "description",
        "url",
        "name",
        "image_full_url",
        "image_thumbnail_url",
        "item_external_id",
        "first_name",
        "last_name",
        "organization",
        "locale",
        "image",
        "properties.OrderId",
    }
)


@dataclass(slots=True, frozen=True)
class CompiledField:
    """One field rule ready to run: ``read(row, warnings)`` returns a value, EMPTY, or raises."""

    target: str
    column: str | None
    read: Reader


@dataclass(slots=True)
class CompiledMapping:
    """A mapping with every field rule compiled; ``resolve`` maps one row to ``{target: value}``."""

    mapping: Mapping
    fields: list[CompiledField]
    keep_empty: bool
    # Order mappings check order-level required / skip-when-empty fields once per order, not per line
    # row, because exports fill order columns on an order's first row only: (target, column) pairs.
    group_required: list[tuple[str, str | None]]
    group_skip: list[tuple[str, str | None]]
    # (read, target, column) per field, and the marker that, besides DROPPED, means "leave it out".
    _plan: list[tuple[Reader, str, str | None]] = field(init=False)
    _leave_out: Any = field(init=False)

    def __post_init__(self) -> None:
        self._plan = [(f.read, f.target, f.column) for f in self.fields]
        self._leave_out = DROPPED if self.keep_empty else EMPTY

    def resolve(self, row: Row, errors: list[Issue], warnings: list[Issue]) -> dict[str, Any]:
        """Values by target; empty fields are left out (or EMPTY when the mapping clears them).

        Raises SkipRow when a skip-when-empty field is empty.
        """
        values: dict[str, Any] = {}
        leave_out = self._leave_out
        for read, target, column in self._plan:
            try:
                value = read(row, warnings)
            except RuleError as exc:
                errors.append(exc.to_issue(column))
                continue
            if value is not DROPPED and value is not leave_out:  # identity checks: the hot path
                values[target] = value
        return values


# Identifiers an event can do without when another one is valid: a bad one is dropped with a warning
# (rule -> warning rule); the pipeline turns it back into the error when no identifier is left.
DROPPED_IDENTIFIERS = {"invalid_phone": "phone_dropped", "invalid_email": "email_dropped"}
RESTORED_RULES = {dropped: rule for rule, dropped in DROPPED_IDENTIFIERS.items()}
DROPPED_NOTE = "; it is left out and the {} is sent with its other identifier"
_EVENT_IDENTIFIERS = frozenset({"email", "phone_number", "profile.email", "profile.phone_number"})


def compile_mapping(mapping: Mapping) -> CompiledMapping:
    """Compile every field rule of ``mapping`` into closures."""
    opts = mapping.options
    kind = mapping.target.kind
    soft_phone = opts.drop_invalid_phone and kind in (TargetKind.PROFILE, TargetKind.SUBSCRIPTION)
    soft_ids = kind in (TargetKind.EVENT, TargetKind.ORDER)
    group_required: list[tuple[str, str | None]] = []
    group_skip: list[tuple[str, str | None]] = []
    rules = list(mapping.fields)
    if kind is TargetKind.ORDER:
        for index, rule in enumerate(rules):
            if rule.target.startswith("item.") or not (rule.required or rule.skip_row_when_empty):
                continue
            _, column = _compile_source(rule)
            if rule.required:
                group_required.append((rule.target, column))
            if rule.skip_row_when_empty:
                group_skip.append((rule.target, column))
            rules[index] = rule.model_copy(update={"required": False, "skip_row_when_empty": False})
    fields = [_compile_field(rule, opts, soft_phone, soft_ids) for rule in rules]
    keep_empty = opts.clear_empty and kind is TargetKind.PROFILE
    return CompiledMapping(mapping, fields, keep_empty, group_required, group_skip)


def _compile_field(
    rule: FieldRule, opts: MappingOptions, soft_phone: bool = False, soft_ids: bool = False
) -> CompiledField:
    compiled = _compile_strict_field(rule, opts)
    if soft_phone and rule.target == "phone_number":
        return CompiledField(
            compiled.target, compiled.column, _drop_bad_phone(compiled.read, compiled.column)
        )
    if soft_ids and rule.target in _EVENT_IDENTIFIERS and not rule.required:
        return CompiledField(
            compiled.target, compiled.column, _drop_bad_identifier(compiled.read, compiled.column)
        )
    return compiled


def _drop_bad_identifier(read: Reader, column: str | None) -> Reader:
    """An event needs one identifier, not all: a bad phone or email is dropped with a warning (the
    pipeline refuses the event after all when no other identifier is left)."""

    def soft_read(row: Row, warnings: list[Issue]) -> Any:
        try:
            return read(row, warnings)
        except RuleError as exc:
            dropped = DROPPED_IDENTIFIERS.get(exc.rule)
            if dropped is None:
                raise
            note = DROPPED_NOTE.format("event")
            warnings.append(warning(dropped, exc.message + note, exc.column or column))
            return DROPPED

    return soft_read


def _drop_bad_phone(read: Reader, column: str | None) -> Reader:
    """Keep the profile when its phone is invalid: drop the phone and warn instead of failing the row."""

    def soft_read(row: Row, warnings: list[Issue]) -> Any:
        try:
            return read(row, warnings)
        except RuleError as exc:
            if exc.rule != "invalid_phone":
                raise
            warnings.append(warning("phone_dropped", exc.message + DROPPED_NOTE.format("profile"), column))
            return DROPPED

    return soft_read


def _compile_strict_field(rule: FieldRule, opts: MappingOptions) -> CompiledField:
    get, column = _compile_source(rule)
    specs = value_maps.implicit(rule.target, list(rule.transforms))
    implicit = _IMPLICIT.get(rule.target)
    if implicit is not None and not any(spec.op == implicit.op for spec in specs):
        specs.append(implicit)
    steps = [_compile_transform(spec, opts, column) for spec in specs]
    text_target = rule.target in _TEXT_TARGETS
    if rule.target == "value_currency":
        steps.append(_currency)
    default = rule.default
    required = rule.required
    skip = rule.skip_row_when_empty
    target = rule.target

    def on_empty(value: Any) -> Any:
        if default is not None:
            return default
        if skip:
            raise SkipRow(column)
        if required:
            raise RuleError("required_missing", f"{target} is required but {column or 'the source'} is empty")
        # An empty cell may clear the field (profiles with clear_empty); a missing cell never does.
        return DROPPED if value is None else EMPTY

    def finish(value: Any, warnings: list[Issue]) -> Any:
        for step in steps:
            value = step(value, warnings)
        if text_target and type(value) is not str:
            value = _as_text(value)
        return value

    if default is not None:
        # A default is written like a cell ("2024-01-01", "1,5"), so clean it once, now.
        try:
            default = finish(default, [])
        except RuleError as exc:
            raise MappingError(f"the default for {target} is not usable: {exc.message}") from None

    if isinstance(rule.source, ColumnSource):
        return CompiledField(
            target, column, _column_reader(rule.source.column, steps, text_target, on_empty, finish)
        )

    def read(row: Row, warnings: list[Issue]) -> Any:
        value = get(row)
        if value is None or value == "":
            return on_empty(value)
        return finish(value, warnings)

    return CompiledField(target, column, read)


def _column_reader(
    name: str,
    steps: list[Step],
    text_target: bool,
    on_empty: Callable[[Any], Any],
    finish: Callable[[Any, list[Issue]], Any],
) -> Reader:
    """The hot path: most fields read one CSV column with zero or one transform, so those two
    cases get a closure that does the lookup, trim, empty check and step without further calls."""
    if not steps:

        def read_plain(row: Row, warnings: list[Issue]) -> Any:
            value = row.get(name)
            if type(value) is str:
                value = value.strip()
                if value:
                    return value
                return on_empty(value)
            if value is None:
                return on_empty(value)
            return _as_text(value) if text_target else value

        return read_plain
    if len(steps) == 1 and not text_target:
        (only,) = steps

        def read_one(row: Row, warnings: list[Issue]) -> Any:
            value = row.get(name)
            if type(value) is str:
                value = value.strip()
                if not value:
                    return on_empty(value)
            elif value is None:
                return on_empty(value)
            return only(value, warnings)

        return read_one

    def read_many(row: Row, warnings: list[Issue]) -> Any:
        value = row.get(name)
        if type(value) is str:
            value = value.strip()
            if not value:
                return on_empty(value)
        elif value is None:
            return on_empty(value)
        return finish(value, warnings)

    return read_many


# ---------------------------------------------------------------- sources


def _clean(value: Any) -> Any:
    """Trim strings and map blank text to "" so every source treats blanks alike."""
    if type(value) is str:
        return value.strip()
    return value


def _compile_source(rule: FieldRule) -> tuple[Callable[[Row], Any], str | None]:
    src = rule.source
    if isinstance(src, ColumnSource):
        name = src.column

        def get_column(row: Row) -> Any:
            value = row.get(name)
            return value.strip() if type(value) is str else value

        return get_column, name
    if isinstance(src, PathSource):
        getters = [_path_getter(parse_path(path)) for path in path_alternatives(src.path)]
        if len(getters) == 1:
            return getters[0], src.path
        return _first_of(getters), src.path
    if isinstance(src, ConstantSource):
        constant = src.value
        return (lambda row: constant), None
    if isinstance(src, TemplateSource):
        return _template_getter(split_template(src.template)), src.template
    raise TypeError(f"unknown source {src!r}")  # pragma: no cover - pydantic rejects it first


def _path_getter(keys: tuple[str | int, ...]) -> Callable[[Row], Any]:
    def get_path(row: Row) -> Any:
        node: Any = row
        for key in keys:
            if isinstance(key, int):
                if not isinstance(node, list) or key >= len(node):
                    return None
                node = node[key]
            else:
                if not isinstance(node, RowMapping):
                    return None
                node = node.get(key)
            if node is None:
                return None
        return _clean(node)

    return get_path


def _first_of(getters: list[Callable[[Row], Any]]) -> Callable[[Row], Any]:
    """The first alternative with a value (``revenue | total``)."""

    def get_first(row: Row) -> Any:
        for get in getters:
            value = get(row)
            if value is not None and value != "":
                return value
        return None

    return get_first


def template_field_getter(text: str) -> Callable[[Row], Any]:
    """How a template reads one ``{field}``: a column of that exact name, else (for ``a.b``, ``a | b``
    and ``a:unix``) a path with alternatives, optionally written as UNIX seconds."""
    name, unix = (text[: -len(":unix")].strip(), True) if text.endswith(":unix") else (text, False)
    getter: Callable[[Row], Any] | None = None
    if unix or any(mark in name for mark in ".[|"):
        try:
            alternatives = [_path_getter(parse_path(path)) for path in path_alternatives(name)]
            getter = alternatives[0] if len(alternatives) == 1 else _first_of(alternatives)
        except ValueError:
            getter = None
    if getter is None:
        return lambda row: row.get(text)
    if not unix:
        exact = getter

        def column_or_path(row: Row) -> Any:
            value = row.get(text)
            return exact(row) if value is None else value

        return column_or_path
    dated = getter

    def unix_seconds(row: Row) -> Any:
        value = dated(row)
        if value is None or value == "":
            return None
        try:
            text_value, _ = tf.parse_datetime(value, None, "UTC")
        except RuleError:
            return None
        return str(int(datetime.fromisoformat(text_value).timestamp()))

    return unix_seconds


def _template_getter(parts: list[tuple[bool, str]]) -> Callable[[Row], Any]:
    readers: list[tuple[bool, Any]] = [
        (is_column, template_field_getter(text) if is_column else text) for is_column, text in parts
    ]

    def get_template(row: Row) -> Any:
        out: list[str] = []
        for is_column, part in readers:
            if not is_column:
                out.append(part)
                continue
            value = part(row)
            if value is None or (text_value := str(value).strip()) == "":
                return None  # a key built from a missing part is no key at all
            out.append(text_value)
        return "".join(out)

    return get_template


# ---------------------------------------------------------------- transforms


def _each(fn: Callable[..., Any], *args: Any) -> Step:
    """Apply a scalar transform (with fixed extra arguments) to a value, or to each element of a list."""
    if args:
        (arg,) = args

        def step_with_arg(value: Any, warnings: list[Issue]) -> Any:
            if type(value) is list:
                return [fn(item, arg) for item in value]
            return fn(value, arg)

        return step_with_arg

    def step(value: Any, warnings: list[Issue]) -> Any:
        if type(value) is list:
            return [fn(item) for item in value]
        return fn(value)

    return step


def _compile_transform(spec: Transform, opts: MappingOptions, column: str | None) -> Step:
    if isinstance(spec, Trim):
        return _each(tf.trim)
    if isinstance(spec, Lower):
        return _each(lambda v: tf.trim(v).lower())
    if isinstance(spec, Email):
        return _email_step(column)
    if isinstance(spec, NumberCast):
        return _each(tf.to_number, spec.decimal)
    if isinstance(spec, IntegerCast):
        return _each(tf.to_integer, spec.decimal)
    if isinstance(spec, BooleanCast):
        return _each(tf.to_boolean)
    if isinstance(spec, Split):
        separator = spec.separator
        return lambda v, w: tf.split(v, separator)
    if isinstance(spec, DateParse):
        return _date_step(spec, opts, column)
    if isinstance(spec, Phone):
        return _each(tf.to_e164, spec.region or opts.default_phone_region)
    if isinstance(spec, MapObjects):
        return _map_objects_step(spec)
    if isinstance(spec, MapValues):
        step: Step = value_maps.compile_map(spec)
        return step
    raise TypeError(f"unknown transform {spec!r}")  # pragma: no cover


def _map_objects_step(spec: MapObjects) -> Step:
    keys = dict(spec.keys)
    numbers = frozenset(spec.numbers)
    lists = frozenset(spec.lists)

    def convert(obj: Any) -> dict[str, Any]:
        if not isinstance(obj, RowMapping):
            raise RuleError(
                "not_an_object", f"expected an object with named fields, got {type(obj).__name__}"
            )
        out: dict[str, Any] = {}
        for source_key, target_key in keys.items():
            value = obj.get(source_key)
            if value is None or value == "":
                continue
            if target_key in numbers:
                value = tf.to_number(value)
            elif target_key in lists:
                value = tf.split(value)
            out[target_key] = value
        return out

    def step(value: Any, warnings: list[Issue]) -> Any:
        if isinstance(value, list):
            return [convert(obj) for obj in value]
        return convert(value)

    return step


def _email_step(column: str | None) -> Step:
    def step(value: Any, warnings: list[Issue]) -> Any:
        address = tf.email(value)
        if address.endswith(("@example.com", ".example.com")):
            warnings.append(
                warning(
                    "example_address",
                    f"{address} is an @example.com address: Klaviyo accepts it but never processes it",
                    column,
                )
            )
        return address

    return step


def _date_step(spec: DateParse, opts: MappingOptions, column: str | None) -> Step:
    fmt = spec.format
    tz = spec.timezone or opts.default_timezone
    tf.zone(tz)  # fail at compile time, not on row one million
    dayfirst = opts.dayfirst if spec.dayfirst is None else spec.dayfirst
    hour = opts.date_only_hour if spec.date_only_hour is None else spec.date_only_hour
    note = (
        f"has a date with no time of day; it is sent as {hour:02d}:00 {tz}. Klaviyo would read a bare "
        "date as midnight UTC, so date-triggered flows fire early or late: check the zone and hour"
    )

    # Exports repeat timestamps (every line of an order, every row of a day), so remember recent ones.
    memo: dict[Any, tuple[str, bool]] = {}

    def step(value: Any, warnings: list[Issue]) -> Any:
        found = memo.get(value)
        if found is None:
            found = tf.parse_datetime(value, fmt, tz, dayfirst=dayfirst, date_only_hour=hour)
            if len(memo) >= 4096:
                memo.clear()
            memo[value] = found
        text, had_time = found
        if not had_time:
            warnings.append(warning("date_without_time", f"{column or 'value'} {note}", column))
        return text

    return step


def _as_text(value: Any) -> Any:
    if type(value) is str:
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 1234.0 from a spreadsheet is the id "1234"
    if isinstance(value, int | float):
        return str(value)
    return value


def _currency(value: Any, warnings: list[Issue]) -> Any:
    code = str(value).strip().upper()
    if len(code) != 3 or not code.isalpha():
        raise RuleError("invalid_currency", f"{value!r} is not an ISO 4217 currency code such as USD")
    return code
