"""A run's row errors as CSV, streamed, and safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

from sqlalchemy import and_, or_
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import RowError

HEADER = ["row_number", "severity", "stage", "column", "rule", "message", "original_values"]
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


async def error_csv(sessionmaker: async_sessionmaker[AsyncSession], run_id: int) -> AsyncIterator[str]:
    """Yield the CSV text in row order, a page at a time (keyset), so a million errors never sit in memory."""
    yield "\ufeff" + _line(list(HEADER))  # BOM: Excel then reads UTF-8 correctly
    last_row, last_id = -1, 0
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
            rows = (await db.exec(query)).all()
        if not rows:
            return
        yield "".join(
            _line([e.row_number, e.severity, e.stage, e.column, e.rule, e.message, _values(e.values)])
            for e in rows
        )
        last_row, last_id = rows[-1].row_number, rows[-1].id or 0
