"""A run's row errors as CSV, streamed, and safe to open in a spreadsheet.

Each failed row comes back with the upload's own columns (same headers, same order) and the error
columns after them, so an operator can fix the cells in a spreadsheet and upload the file again
with the same mapping: a mapping reads its columns by name and ignores the error ones."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

from sqlalchemy import and_, or_
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import RowError, SyncRun, Upload

# After the source columns; prefixed, so they cannot collide with a column of the upload.
ERROR_HEADER = [
    "error_row",
    "error_severity",
    "error_stage",
    "error_column",
    "error_rule",
    "error_message",
    "error_other_values",
]
# A cell starting with one of these is run as a formula by Excel, LibreOffice and Sheets.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
PAGE = 2000


def neutralise(value: object) -> str:
    """Prefix a quote so a spreadsheet shows the text instead of evaluating it."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _line(cells: list[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow([neutralise(c) for c in cells])
    return buffer.getvalue()


def _values(values: dict[str, object]) -> str:
    return "; ".join(f"{k}={v}" for k, v in values.items())


def _merged(errors: list[RowError], columns: list[str]) -> str:
    """One CSV line for one row's errors: the row's cells under its own columns, then the distinct
    stages, columns, rules and messages joined, and any value that has no column of its own."""

    def cells(values: list[str | None]) -> str:
        return " | ".join(dict.fromkeys(v for v in values if v))

    first = errors[0]
    severity = "error" if any(e.severity == "error" for e in errors) else first.severity
    values: dict[str, object] = {}
    for error in errors:
        values.update(error.values)
    known = set(columns)
    other = {k: v for k, v in values.items() if k not in known}
    return _line(
        [
            *(values.get(name, "") for name in columns),
            first.row_number,
            severity,
            cells([e.stage for e in errors]),
            cells([e.column for e in errors]),
            cells([e.rule for e in errors]),
            cells([e.message for e in errors]),
            _values(other),
        ]
    )


def _lines(errors: list[RowError], columns: list[str]) -> str:
    # Row 0 and below hold errors with no source row (catalog deletes): each names its own entry.
    if errors[0].row_number <= 0:
        return "".join(_merged([e], columns) for e in errors)
    return _merged(errors, columns)


async def _source_columns(sessionmaker: async_sessionmaker[AsyncSession], run_id: int) -> list[str]:
    """The upload's headers in file order (none for a run with no file behind it)."""
    async with sessionmaker() as db:
        run = await db.get(SyncRun, run_id)
        upload = await db.get(Upload, run.upload_id) if run is not None and run.upload_id else None
        # A re-uploaded error CSV brings its error columns along: they are written afresh, not twice.
        return [h for h in upload.headers if h not in ERROR_HEADER] if upload is not None else []


async def error_csv(sessionmaker: async_sessionmaker[AsyncSession], run_id: int) -> AsyncIterator[str]:
    """Yield the CSV text in row order, one line per source row, a page at a time (keyset), so a
    million errors never sit in memory. An order's error is on each of its rows: listed once each."""
    columns = await _source_columns(sessionmaker, run_id)
    yield "\ufeff" + _line([*columns, *ERROR_HEADER])  # BOM: Excel then reads UTF-8 correctly
    last_row, last_id = -1, 0
    pending: list[RowError] = []  # the last row of a page may continue on the next
    while True:
        after = or_(
            col(RowError.row_number) > last_row,
            and_(col(RowError.row_number) == last_row, col(RowError.id) > last_id),
        )
        query = (
            select(RowError)
            .where(RowError.run_id == run_id, after)
            .order_by(col(RowError.row_number), col(RowError.id))
            .limit(PAGE)
        )
        # A short session per page: the download may take longer than any one request should hold one.
        async with sessionmaker() as db:
            rows = list((await db.exec(query)).all())
        if not rows:
            if pending:
                yield _lines(pending, columns)
            return
        out = []
        for error in rows:
            if pending and pending[0].row_number != error.row_number:
                out.append(_lines(pending, columns))
                pending = []
            pending.append(error)
        yield "".join(out)
        last_row, last_id = rows[-1].row_number, rows[-1].id or 0
