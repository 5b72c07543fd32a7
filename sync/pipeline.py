"""The one mapping pipeline: rows in, per-row results (items, errors, warnings) out.

The web preview and the workers both call ``run_pipeline`` so a preview shows exactly what a run sends.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from collections.abc import Mapping as RowMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sync.compiler import DROPPED_NOTE, EMPTY, RESTORED_RULES, CompiledMapping, compile_mapping
from sync.issues import Issue, RuleError, SkipRow
from sync.mapping import Mapping, TargetKind, parse_path
from sync.readers import CsvReader
from sync.targets.catalog import CatalogBuilder
from sync.targets.common import Item
from sync.targets.events import EventBuilder
from sync.targets.lists import ListMembershipBuilder
from sync.targets.orders import ORDER_KEY, OrderBuilder, explode_lines, external_sort
from sync.targets.profiles import ProfileBuilder
from sync.targets.subscriptions import SubscriptionBuilder
from sync.validation import (
    EventChecks,
    check_item_strings,
    check_mapping,
    check_new_metrics,
    check_profile_identifier,
)

Row = RowMapping[str, Any]


@dataclass(slots=True)
class RowResult:
    """What one source row (or one grouped order) becomes.

    ``items`` is empty when the row has errors or was skipped; ``rows`` lists every source row of a
    grouped order (``(row_ref,)`` otherwise).
    """

    row_ref: int
    items: list[Item]
    errors: list[Issue]
    warnings: list[Issue]
    rows: tuple[int, ...] = ()
    skipped: bool = False

    @property
    def ok(self) -> bool:
        """True when the row produced items without errors."""
        return not self.errors and not self.skipped


class _RowBuilder(Protocol):
    def build(self, values: dict[str, Any], row: Row) -> list[Item]: ...


class Pipeline:
    """A compiled mapping plus its target builder and checks; reusable across many rows."""

    def __init__(self, mapping: Mapping, *, now: datetime | None = None) -> None:
        self.mapping = mapping
        self.compiled: CompiledMapping = compile_mapping(mapping)
        self.kind = mapping.target.kind
        nested = {
            t.split(".")[1] for t in mapping.targets() if t.startswith("properties.") and t.count(".") > 1
        }
        self.event_checks = EventChecks(now, declared_nested=nested)
        self.order_builder: OrderBuilder | None = None
        self.row_builder: _RowBuilder | None = None
        if self.kind is TargetKind.ORDER:
            self.order_builder = OrderBuilder(mapping, self.compiled.group_required, self.compiled.group_skip)
        else:
            self.row_builder = _row_builder(mapping)
        self.is_event = self.kind in (TargetKind.EVENT, TargetKind.ORDER)
        self.is_profile = self.kind in (TargetKind.PROFILE, TargetKind.SUBSCRIPTION)

    def metric_names(self) -> list[str]:
        """Metric names this mapping sends events to."""
        if self.kind is TargetKind.EVENT:
            return [self.mapping.target.metric or ""]
        if self.kind is TargetKind.ORDER:
            opts = self.mapping.options
            return [opts.order_metric] + ([opts.line_metric] if opts.line_metric else [])
        return []

    def order_key(self, row: Row) -> str | None:
        """The order id of a raw row (for ``external_sort``); None when the row has none."""
        for compiled in self.compiled.fields:
            if compiled.target == ORDER_KEY:
                try:
                    value = compiled.read(row, [])
                except (RuleError, SkipRow):
                    return None
                return value if isinstance(value, str) else None
        return None

    def run(self, rows: Iterable[tuple[int, Row]], *, sort_orders: bool = False) -> Iterator[RowResult]:
        """Yield one RowResult per row, or per order for order mappings.

        ``sort_orders`` first sorts an order file by order id with a bounded-memory external sort,
        for exports whose line rows of one order are not adjacent.
        """
        if self.order_builder is not None:
            lines_path = self.mapping.options.line_items_path
            if lines_path:
                rows = explode_lines(rows, parse_path(lines_path))
            if sort_orders:
                rows = external_sort(rows, self.order_key)
            yield from self._run_orders(rows, self.order_builder)
            return
        assert self.row_builder is not None
        build = self.row_builder.build
        resolve = self.compiled.resolve
        check_event = self.event_checks.check
        is_event, is_profile = self.is_event, self.is_profile
        for number, row in rows:
            errors: list[Issue] = []
            warnings: list[Issue] = []
            try:
                values = resolve(row, errors, warnings)
            except SkipRow:
                yield RowResult(number, [], [], warnings, (number,), skipped=True)
                continue
            items: list[Item] = []
            if not errors:
                try:
                    items = build(values, row)
                except RuleError as exc:
                    errors.append(exc.to_issue())
            for item in items:
                if is_event:
                    check_event(item, errors, warnings)
                else:
                    if is_profile:
                        check_profile_identifier(item, errors)
                    check_item_strings(item, errors)
            if errors:
                explain_missing_identifier(errors, warnings, row, None if items else values)
            yield RowResult(number, [] if errors else items, errors, warnings, (number,))

    def _run_orders(self, rows: Iterable[tuple[int, Row]], builder: OrderBuilder) -> Iterator[RowResult]:
        """Group adjacent rows by order id, then build each order."""
        resolve = self.compiled.resolve
        finished: set[int] = set()  # hashes of order ids already built, to catch non-adjacent rows
        key: str | None = None
        first_row: Row = {}
        group: list[tuple[int, dict[str, Any], list[Issue], list[Issue]]] = []
        for number, row in rows:
            errors: list[Issue] = []
            warnings: list[Issue] = []
            try:
                values = resolve(row, errors, warnings)
            except SkipRow:
                yield RowResult(number, [], [], warnings, (number,), skipped=True)
                continue
            order_id = values.get(ORDER_KEY, EMPTY)
            if order_id is EMPTY or order_id is None:
                if not errors:
                    errors.append(
                        Issue("missing_order_id", "the row has no order id to group it by", ORDER_KEY)
                    )
                yield RowResult(number, [], errors, warnings, (number,))
                continue
            if order_id != key:
                if group:
                    finished.add(hash(key))
                    yield self._build_order(builder, group, first_row)
                    group = []
                key, first_row = order_id, row
                if hash(order_id) in finished:
                    errors.append(
                        Issue(
                            "order_not_adjacent",
                            f"order {order_id} continues here after other orders; sort the file by order id "
                            "(the pipeline's external sort does this) so an order's rows are adjacent",
                            ORDER_KEY,
                        )
                    )
            group.append((number, values, errors, warnings))
        if group:
            yield self._build_order(builder, group, first_row)

    def _build_order(
        self,
        builder: OrderBuilder,
        group: list[tuple[int, dict[str, Any], list[Issue], list[Issue]]],
        first_row: Row,
    ) -> RowResult:
        numbers = tuple(dict.fromkeys(number for number, _, _, _ in group))  # JSON lines share a record
        errors = [issue.at_row(number) for number, _, errs, _ in group for issue in errs]
        warnings = [issue.at_row(number) for number, _, _, warns in group for issue in warns]
        items: list[Item] = []
        if not errors:
            try:
                items = builder.build([values for _, values, _, _ in group])
            except RuleError as exc:
                errors.append(exc.to_issue().at_row(numbers[0]))
            except SkipRow:
                return RowResult(numbers[0], [], [], _dedupe(warnings), numbers, skipped=True)
            for item in items:
                self.event_checks.check(item, errors, warnings)
            if errors:
                explain_missing_identifier(errors, warnings, first_row)
        return RowResult(numbers[0], [] if errors else items, errors, _dedupe(warnings), numbers)


MISSING_IDENTIFIER = "missing_profile_identifier"


_IDENTIFIER_VALUES = (
    "email", "phone_number", "external_id", "profile.email", "profile.phone_number", "profile.external_id",
)  # fmt: skip


def explain_missing_identifier(
    errors: list[Issue], warnings: list[Issue], row: Row, values: dict[str, Any] | None = None
) -> None:
    """When no identifier is left (``values``: a row refused for other reasons, so nothing was built),
    the identifiers dropped for being invalid are the reason: they become errors again in place of
    the generic one."""
    missing = any(issue.rule == MISSING_IDENTIFIER for issue in errors)
    if not missing and (values is None or any(values.get(key) for key in _IDENTIFIER_VALUES)):
        return
    dropped = [w for w in warnings if w.rule in RESTORED_RULES]
    if not dropped:
        if row.get("anonymousId"):
            errors[:] = [
                Issue(
                    MISSING_IDENTIFIER,
                    "the record has only an anonymousId, which names a browser, not a person: Klaviyo "
                    "cannot attach a server-side event to it, so send userId, an email or a phone "
                    "(context.traits) with the event",
                    "anonymousId",
                )
                if issue.rule == MISSING_IDENTIFIER
                else issue
                for issue in errors
            ]
        return
    restored = [
        Issue(RESTORED_RULES[w.rule], w.message.partition(DROPPED_NOTE.partition("{")[0])[0], w.column)
        for w in dropped
    ]
    errors[:] = restored + [issue for issue in errors if issue.rule != MISSING_IDENTIFIER]
    warnings[:] = [w for w in warnings if w.rule not in RESTORED_RULES]


def _dedupe(issues: list[Issue]) -> list[Issue]:
    """Drop repeats of the same rule/column within one order (one warning per order is enough)."""
    seen: set[tuple[str, str | None]] = set()
    out: list[Issue] = []
    for issue in issues:
        mark = (issue.rule, issue.column)
        if mark not in seen:
            seen.add(mark)
            out.append(issue)
    return out


def _row_builder(mapping: Mapping) -> _RowBuilder:
    kind = mapping.target.kind
    if kind is TargetKind.EVENT:
        return EventBuilder(mapping)
    if kind is TargetKind.PROFILE:
        return ProfileBuilder(mapping)
    if kind is TargetKind.SUBSCRIPTION:
        return SubscriptionBuilder(mapping)
    if kind is TargetKind.LIST_MEMBERSHIP:
        return ListMembershipBuilder(mapping)
    return CatalogBuilder(mapping)


def run_pipeline(
    mapping: Mapping,
    rows: Iterable[tuple[int, Row]],
    *,
    now: datetime | None = None,
    sort_orders: bool = False,
) -> Iterator[RowResult]:
    """Map ``rows`` ((row_number, row dict) pairs) with ``mapping``; one RowResult per row or order."""
    return Pipeline(mapping, now=now).run(rows, sort_orders=sort_orders)


# ---------------------------------------------------------------- dry run


@dataclass(slots=True)
class RuleTally:
    """How often a rule fired, its first message, and example rows."""

    rule: str
    count: int = 0
    message: str = ""
    column: str | None = None
    examples: list[int] = field(default_factory=list)

    def add(self, issue: Issue, row: int, max_examples: int) -> None:
        """Count one more occurrence."""
        if self.count == 0:
            self.message, self.column = issue.message, issue.column
        self.count += 1
        if len(self.examples) < max_examples and row not in self.examples:
            self.examples.append(row)


@dataclass(slots=True)
class DryRunSummary:
    """What a run would do, without sending anything."""

    rows: int = 0
    rows_ok: int = 0
    rows_rejected: int = 0
    rows_skipped: int = 0
    items: int = 0
    errors: dict[str, RuleTally] = field(default_factory=dict)
    warnings: dict[str, RuleTally] = field(default_factory=dict)
    mapping_issues: list[Issue] = field(default_factory=list)
    new_metrics: list[str] = field(default_factory=list)
    preview: list[RowResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the web page and the run record."""

        def tallies(source: dict[str, RuleTally]) -> list[dict[str, Any]]:
            ordered = sorted(source.values(), key=lambda t: -t.count)
            return [
                {
                    "rule": t.rule,
                    "count": t.count,
                    "message": t.message,
                    "column": t.column,
                    "examples": t.examples,
                }
                for t in ordered
            ]

        return {
            "rows": self.rows,
            "rows_ok": self.rows_ok,
            "rows_rejected": self.rows_rejected,
            "rows_skipped": self.rows_skipped,
            "items": self.items,
            "errors": tallies(self.errors),
            "warnings": tallies(self.warnings),
            "mapping_issues": [issue.as_dict() for issue in self.mapping_issues],
            "new_metrics": self.new_metrics,
        }


def dry_run(
    mapping: Mapping,
    rows: Iterable[tuple[int, Row]],
    *,
    existing_metrics: Iterable[str] | None = None,
    profile_property_names: Iterable[str] = (),
    source_problems: Iterable[Issue] = (),
    preview_rows: int = 20,
    max_examples: int = 5,
    now: datetime | None = None,
    sort_orders: bool = False,
) -> DryRunSummary:
    """Run the pipeline without sending: counts, errors grouped by rule with example rows, new metrics.

    Reader findings count as rejected rows: a CsvReader passed as ``rows`` contributes its own
    problems after it has been read; other sources may pass ``source_problems``.
    ``existing_metrics`` (the account's metric names) enables the new-metric and 200-metric checks.
    """
    pipeline = Pipeline(mapping, now=now)
    summary = DryRunSummary(mapping_issues=check_mapping(mapping, profile_property_names))
    if existing_metrics is not None:
        summary.new_metrics, limit_issues = check_new_metrics(pipeline.metric_names(), existing_metrics)
        summary.mapping_issues.extend(limit_issues)
    else:
        summary.new_metrics = pipeline.metric_names()
    for result in pipeline.run(rows, sort_orders=sort_orders):
        summary.rows += len(result.rows) or 1
        if result.skipped:
            summary.rows_skipped += 1
        elif result.errors:
            summary.rows_rejected += len(result.rows) or 1
        else:
            summary.rows_ok += len(result.rows) or 1
            summary.items += len(result.items)
        for issue in result.errors:
            _tally(summary.errors, issue, issue.row or result.row_ref, max_examples)
        for issue in result.warnings:
            _tally(summary.warnings, issue, issue.row or result.row_ref, max_examples)
        if len(summary.preview) < preview_rows:
            summary.preview.append(result)
    problems = list(source_problems)
    if isinstance(rows, CsvReader):
        problems.extend(rows.issues())
    for problem in problems:
        target = summary.errors if problem.severity == "error" else summary.warnings
        _tally(target, problem, problem.row or 0, max_examples)
        if problem.severity == "error" and problem.row is not None:
            summary.rows += 1
            summary.rows_rejected += 1
    return summary


def _tally(tallies: dict[str, RuleTally], issue: Issue, row: int, max_examples: int) -> None:
    tally = tallies.get(issue.rule)
    if tally is None:
        tally = tallies[issue.rule] = RuleTally(issue.rule)
    tally.add(issue, row, max_examples)
