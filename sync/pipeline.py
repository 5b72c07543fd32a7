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
from sync.issues import SKIPPED_EMPTY, Issue, RuleError, SkipRow
from sync.mapping import Mapping, TargetKind, parse_path
from sync.readers import CsvReader
from sync.row_filters import compile_filters
from sync.targets.catalog import CatalogBuilder
from sync.targets.common import Item
from sync.targets.events import EventBuilder
from sync.targets.lists import ListMembershipBuilder
from sync.targets.orders import ORDER_KEY, OrderBuilder, explode_lines, external_sort
from sync.targets.profiles import ProfileBuilder
from sync.targets.subscriptions import SubscriptionBuilder
from sync.validation import (
    EventChecks,
    IdentityLedger,
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
    grouped order (``(row_ref,)`` otherwise) and ``key`` is that order's id.
    """

    row_ref: int
    items: list[Item]
    errors: list[Issue]
    warnings: list[Issue]
    rows: tuple[int, ...] = ()
    skipped: bool = False
    key: str | None = None
    # Why a skipped row was skipped (rule skipped_filter, skipped_no_consent, skipped_empty).
    skip: Issue | None = None

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
        # Profiles of one source that share an identity: flagged, as Klaviyo merges or refuses them.
        self.identities = IdentityLedger()
        self.row_filter = compile_filters(mapping.filters)

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

    def groups(self, row: Row) -> bool:
        """True when an order mapping puts this source row into an order (an order id, not skipped)."""
        lines_path = self.mapping.options.line_items_path
        lines = explode_lines([(0, row)], parse_path(lines_path)) if lines_path else [(0, row)]
        for _, line in lines:
            try:
                values = self.compiled.resolve(line, [], [])
            except SkipRow:
                continue
            if values.get(ORDER_KEY, EMPTY) not in (EMPTY, None):
                return True
        return False

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
        identities = self.identities.check
        row_filter = self.row_filter
        for number, row in rows:
            if row_filter is not None and (dropped := row_filter(row)) is not None:
                yield RowResult(number, [], [], [], (number,), skipped=True, skip=dropped)
                continue
            errors: list[Issue] = []
            warnings: list[Issue] = []
            try:
                values = resolve(row, errors, warnings)
            except SkipRow as exc:
                yield RowResult(number, [], [], warnings, (number,), skipped=True, skip=exc.to_issue())
                continue
            items: list[Item] = []
            if not errors:
                try:
                    items = build(values, row)
                except RuleError as exc:
                    errors.append(exc.to_issue())
                except SkipRow as exc:
                    yield RowResult(number, [], [], warnings, (number,), skipped=True, skip=exc.to_issue())
                    continue
            for item in items:
                if is_event:
                    check_event(item, errors, warnings)
                else:
                    if is_profile:
                        check_profile_identifier(item, errors)
                    check_item_strings(item, errors)
            if errors:
                explain_missing_identifier(errors, warnings, row, None if items else values)
            elif is_profile:
                for item in items:
                    identities(item, number, warnings)
            yield RowResult(number, [] if errors else items, errors, warnings, (number,))

    def _run_orders(self, rows: Iterable[tuple[int, Row]], builder: OrderBuilder) -> Iterator[RowResult]:
        """Group adjacent rows by order id, then build each order."""
        resolve = self.compiled.resolve
        finished: set[int] = set()  # hashes of order ids already built, to catch non-adjacent rows
        key: str | None = None
        first_row: Row = {}
        group: list[tuple[int, dict[str, Any], list[Issue], list[Issue]]] = []
        row_filter = self.row_filter
        for number, row in rows:
            if row_filter is not None and (dropped := row_filter(row)) is not None:
                yield RowResult(number, [], [], [], (number,), skipped=True, skip=dropped)
                continue
            errors: list[Issue] = []
            warnings: list[Issue] = []
            try:
                values = resolve(row, errors, warnings)
            except SkipRow as exc:
                yield RowResult(number, [], [], warnings, (number,), skipped=True, skip=exc.to_issue())
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
                    yield self._build_order(builder, group, key, first_row)
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
            yield self._build_order(builder, group, key, first_row)

    def _build_order(
        self,
        builder: OrderBuilder,
        group: list[tuple[int, dict[str, Any], list[Issue], list[Issue]]],
        key: str | None,
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
            except SkipRow as exc:
                return RowResult(
                    numbers[0], [], [], _dedupe(warnings), numbers, skipped=True, key=key, skip=exc.to_issue()
                )
            for item in items:
                self.event_checks.check(item, errors, warnings)
            if errors:
                explain_missing_identifier(errors, warnings, first_row)
        return RowResult(numbers[0], [] if errors else items, errors, _dedupe(warnings), numbers, key=key)


@dataclass(slots=True, frozen=True)
class RowFailure:
    """One error as it lands on one source row.

    ``events`` is how many events (items) the error stopped on this row: an error of a grouped
    order counts its events once, on the order's first row, and 0 on the other rows it fails.
    """

    row: int
    issue: Issue
    events: int = 1


ORDER_REJECTED = "order_rejected"


def row_failures(result: RowResult) -> list[RowFailure]:
    """The result's errors on the source rows they fail, each (row, rule, column, message) once.

    An order is one unit: an error of the whole order lands on every row of it, an error of one
    line lands on that line, and the order's other lines get ``order_rejected`` (not sent because
    another line failed), so every row of a failed order is failed, and counted, once per rule.
    """
    if not result.errors:
        return []
    rows = result.rows or (result.row_ref,)
    counts: dict[tuple[int, Issue], int] = {}
    for issue in result.errors:
        bare = Issue(issue.rule, issue.message, issue.column, issue.severity)
        if issue.row is not None and issue.row in rows:
            targets: tuple[int, ...] = (issue.row,)
        else:
            targets = rows
        for index, row in enumerate(targets):
            counts[(row, bare)] = counts.get((row, bare), 0) + (1 if index == 0 else 0)
    failures = [RowFailure(row, issue, events) for (row, issue), events in counts.items()]
    failed = {f.row for f in failures if f.issue.severity == "error"}
    if len(rows) > 1 and failed and len(failed) < len(rows):
        first = min(failed)
        cause = next(f.issue for f in failures if f.row == first and f.issue.severity == "error")
        order = f"order {result.key}" if result.key is not None else "this order"
        reason = Issue(
            ORDER_REJECTED,
            f"not sent: {order} goes to Klaviyo whole or not at all, and its row {first} failed "
            f"({cause.rule}{': ' + cause.column if cause.column else ''})",
        )
        failures.extend(RowFailure(row, reason, 0) for row in rows if row not in failed)
    return sorted(failures, key=lambda f: f.row)


def refuse(result: RowResult, issue: Issue) -> RowResult:
    """The same rows with nothing to send and ``issue`` added (an order that cannot go whole)."""
    return RowResult(
        result.row_ref, [], [*result.errors, issue], result.warnings, result.rows, False, result.key
    )


ORDER_INCOMPLETE = "order_incomplete"


class RetryOrders:
    """What a retry of orders reads: every row of each failed order, found by its order id.

    ``parent`` holds the rows each failed order had in the failed run; an order whose rows in the
    file are not all together, or no longer include those rows, is refused rather than sent in part.
    """

    def __init__(self, only: set[int], parent: dict[str, list[int]]) -> None:
        self.rows = set(only)
        self.parent = parent
        self.found: dict[str, list[int]] = {}

    def add(self, key: str, row: int) -> None:
        """A source row of a failed order."""
        self.found.setdefault(key, []).append(row)
        self.rows.add(row)

    def whole(self, result: RowResult) -> RowResult:
        """The result unchanged when it is a whole order; otherwise refused with the reason."""
        if result.key is None or result.skipped:
            return result
        key = str(result.key)
        expected = set(self.found.get(key, ()))
        missing = sorted(set(self.parent.get(key, ())) - expected)
        if missing:
            return refuse(
                result,
                Issue(
                    ORDER_INCOMPLETE,
                    f"order {key} cannot be rebuilt whole: {_rows_text(missing)} of the failed run "
                    "no longer belong to it in the file; nothing of the order was sent",
                    ORDER_KEY,
                ),
            )
        elsewhere = sorted(expected - set(result.rows))
        if elsewhere:
            return refuse(
                result,
                Issue(
                    ORDER_INCOMPLETE,
                    f"order {key} cannot be rebuilt whole: its {_rows_text(elsewhere)} are not next to "
                    "its other rows (sort the file by order id); nothing of the order was sent",
                    ORDER_KEY,
                ),
            )
        return result

    def lost(self) -> dict[str, list[int]]:
        """Failed orders of which the file no longer has any row, with the rows they had."""
        return {key: rows for key, rows in self.parent.items() if key not in self.found}


class OrderKeys(Protocol):
    """Anything that tells a raw row's order id (a pipeline, or several routed by event name)."""

    def order_key(self, row: Row) -> str | None: ...


class OrderLayout:
    """Order ids whose rows are not all next to each other in the source, found in a first pass,
    so that no part of such an order is sent (the pipeline groups adjacent rows only)."""

    def __init__(self, pipeline: OrderKeys) -> None:
        self.key = pipeline.order_key
        self.seen: set[int] = set()
        self.scattered: set[int] = set()
        self.last: str | None = None

    def add(self, row: Row) -> None:
        """Note one source row, in file order."""
        key = self.key(row)
        if key is None or key == self.last:
            return
        mark = hash(key)
        if mark in self.seen:
            self.scattered.add(mark)
        self.seen.add(mark)
        self.last = key

    def whole(self, result: RowResult) -> RowResult:
        """The result unchanged, unless it is part of an order whose rows are apart."""
        if not self.scattered or result.key is None or hash(result.key) not in self.scattered:
            return result
        return refuse(
            result,
            Issue(
                ORDER_INCOMPLETE,
                f"order {result.key} has rows elsewhere in the file, not next to these, so it cannot "
                "be sent whole; sort the file by order id (nothing of the order was sent)",
                ORDER_KEY,
            ),
        )


def _rows_text(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:10]) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
    return f"row {shown}" if len(rows) == 1 else f"rows {shown}"


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
    count: int = 0  # source rows
    message: str = ""
    column: str | None = None
    examples: list[int] = field(default_factory=list)
    events: int = 0  # events (items) it stopped; an order's error counts once per event
    last_row: int | None = None

    def add(self, issue: Issue, row: int, max_examples: int, events: int = 1) -> None:
        """Count one more row (and the events the issue stopped on it); rows come in order."""
        if self.count == 0:
            self.message, self.column = issue.message, issue.column
        if row <= 0 or row != self.last_row:  # row 0: findings about the file, not a row
            self.count += 1
            self.last_row = row
        self.events += events
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
    # Skipped rows by reason (skipped_filter, skipped_no_consent, skipped_empty): never failures.
    skips: dict[str, RuleTally] = field(default_factory=dict)
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
                    "events": t.events,
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
            "skips": tallies(self.skips),
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
            skipped_rows = len(result.rows) or 1
            summary.rows_skipped += skipped_rows
            reason = result.skip or Issue(SKIPPED_EMPTY, "skipped", None, "warning")
            for row in result.rows or (result.row_ref,):
                _tally(summary.skips, reason, row, max_examples)
        elif result.errors:
            summary.rows_rejected += len(result.rows) or 1
        else:
            summary.rows_ok += len(result.rows) or 1
            summary.items += len(result.items)
        for failure in row_failures(result):
            _tally(summary.errors, failure.issue, failure.row, max_examples, failure.events)
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


def _tally(tallies: dict[str, RuleTally], issue: Issue, row: int, max_examples: int, events: int = 1) -> None:
    tally = tallies.get(issue.rule)
    if tally is None:
        tally = tallies[issue.rule] = RuleTally(issue.rule)
    tally.add(issue, row, max_examples, events)
