"""Row-level findings (errors and warnings) shared by transforms, builders, validation and readers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(slots=True, frozen=True)
class Issue:
    """One finding on one row: a stable rule code, the column it concerns, a message for people."""

    rule: str
    message: str
    column: str | None = None
    severity: Severity = "error"
    row: int | None = None  # set when one result covers several rows (a grouped order)

    def as_dict(self) -> dict[str, str | int | None]:
        """Plain dict for JSON and database rows."""
        return {
            "rule": self.rule,
            "message": self.message,
            "column": self.column,
            "severity": self.severity,
            "row": self.row,
        }

    def at_row(self, row: int) -> Issue:
        """The same issue pinned to a source row."""
        return Issue(self.rule, self.message, self.column, self.severity, row)


def warning(rule: str, message: str, column: str | None = None) -> Issue:
    """Shorthand for a warning issue."""
    return Issue(rule, message, column, "warning")


class RuleError(ValueError):
    """A value broke a rule; carries the rule code and a human message."""

    def __init__(self, rule: str, message: str, column: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.column = column

    def to_issue(self, column: str | None = None) -> Issue:
        """The error as an Issue, naming ``column`` when the error did not know it."""
        return Issue(self.rule, self.message, self.column or column, "error")


class MappingError(ValueError):
    """The mapping itself cannot work (unknown target, unusable default, missing key field)."""


SKIPPED_EMPTY = "skipped_empty"
NO_CONSENT = "skipped_no_consent"


class SkipRow(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The row produces no items and no error: a skip-when-empty field was empty, or (``rule``)
    the row grants no consent."""

    def __init__(self, column: str | None, rule: str = SKIPPED_EMPTY, message: str | None = None) -> None:
        super().__init__(column)
        self.column = column
        self.rule = rule
        self.message = message or f"skipped: {column or 'a field marked skip row if empty'} is empty"

    def to_issue(self) -> Issue:
        """Why the row was skipped, as a warning-severity issue (never a failure)."""
        return Issue(self.rule, self.message, self.column, "warning")
