"""Row filters: keep only the rows a mapping should send; the others are skipped, never failed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Mapping as RowMapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sync.issues import Issue

FILTERED = "skipped_filter"
FilterOp = Literal["equals", "not_equals", "one_of", "empty", "not_empty", "truthy"]
# What counts as "yes" in consent and flag columns (compared trimmed, in lower case).
TRUTHY = frozenset({"true", "t", "yes", "y", "1", "on", "x", "subscribed", "checked", "opted in", "opt-in"})
OP_LABELS: dict[str, str] = {
    "equals": "equals",
    "not_equals": "does not equal",
    "one_of": "is one of",
    "empty": "is empty",
    "not_empty": "is not empty",
    "truthy": "is truthy (yes, y, true, 1 ...)",
}


class RowFilter(BaseModel):
    """Keep a row only when ``column`` passes ``op``; text compares trimmed and ignoring case.

    ``column`` is a CSV header, or a dotted path into a JSON record (``customer.accepts_marketing``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str = Field(min_length=1)
    op: FilterOp
    value: str | None = None
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _needs_values(self) -> RowFilter:
        if self.op in ("equals", "not_equals") and self.value is None:
            raise ValueError(f"the filter on {self.column!r} needs a value to compare with")
        if self.op == "one_of" and not self.values:
            raise ValueError(f"the filter on {self.column!r} needs at least one value")
        return self

    def describe(self) -> str:
        """The filter in words: ``accepts_marketing is truthy``."""
        if self.op in ("equals", "not_equals"):
            return f"{self.column} {OP_LABELS[self.op]} {self.value!r}"
        if self.op == "one_of":
            return f"{self.column} is one of {', '.join(repr(v) for v in self.values)}"
        return f"{self.column} {OP_LABELS[self.op]}"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip().lower()


def _getter(name: str) -> Callable[[RowMapping[str, Any]], Any]:
    parts = name.split(".")

    def get(row: RowMapping[str, Any]) -> Any:
        if name in row:
            return row[name]
        node: Any = row
        for part in parts:
            if not isinstance(node, RowMapping):
                return None
            node = node.get(part)
        return node

    return get


RowCheck = Callable[[RowMapping[str, Any]], Issue | None]


def compile_filters(filters: Sequence[RowFilter]) -> RowCheck | None:
    """One function returning the skip reason of a row the filters drop (None: keep it)."""
    if not filters:
        return None
    tests: list[tuple[Callable[[RowMapping[str, Any]], bool], Issue]] = []
    for spec in filters:
        get = _getter(spec.column)
        reason = Issue(FILTERED, f"skipped by filter: {spec.describe()}", spec.column, "warning")
        tests.append((_test(spec, get), reason))

    def check(row: RowMapping[str, Any]) -> Issue | None:
        for passes, reason in tests:
            if not passes(row):
                return reason
        return None

    return check


def _test(
    spec: RowFilter, get: Callable[[RowMapping[str, Any]], Any]
) -> Callable[[RowMapping[str, Any]], bool]:
    op = spec.op
    if op == "equals":
        wanted = _text(spec.value)
        return lambda row: _text(get(row)) == wanted
    if op == "not_equals":
        unwanted = _text(spec.value)
        return lambda row: _text(get(row)) != unwanted
    if op == "one_of":
        allowed = frozenset(_text(v) for v in spec.values)
        return lambda row: _text(get(row)) in allowed
    if op == "empty":
        return lambda row: _text(get(row)) == ""
    if op == "not_empty":
        return lambda row: _text(get(row)) != ""
    return lambda row: _text(get(row)) in TRUTHY
