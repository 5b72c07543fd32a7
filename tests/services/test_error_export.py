"""The error CSV: one line per source row, however many errors the row has and wherever a page ends."""

from __future__ import annotations

import csv
import io

from models import RowError, RunStatus, SyncRun
from services import error_export


async def test_each_row_is_listed_once_across_pages(sessionmaker, monkeypatch):
    monkeypatch.setattr(error_export, "PAGE", 2)
    async with sessionmaker() as db:
        run = SyncRun(kind="catalog_item", status=RunStatus.COMPLETED)
        db.add(run)
        await db.flush()
        assert run.id is not None

        def error(row: int, rule: str, **values: str) -> RowError:
            message = f"{rule} message"
            return RowError(run_id=run.id, row_number=row, rule=rule, message=message, values=values)

        db.add_all(
            [
                error(0, "gone", external_id="A"),  # no source row: each entry keeps its line
                error(0, "gone", external_id="B"),
                error(1, "invalid_email", email="x"),
                error(1, "invalid_email", email="x"),  # the same error again (another event of the row)
                error(1, "not_a_number", email="x"),
                error(2, "time_out_of_range", email="y"),
            ]
        )
        await db.commit()
    text = "".join([chunk async for chunk in error_export.error_csv(sessionmaker, run.id)])
    lines = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert [(r["error_row"], r["error_rule"]) for r in lines] == [
        ("0", "gone"),
        ("0", "gone"),
        ("1", "invalid_email | not_a_number"),
        ("2", "time_out_of_range"),
    ]
    assert lines[2]["error_message"] == "invalid_email message | not_a_number message"
    assert lines[2]["error_other_values"] == "email=x"
    others = [lines[0]["error_other_values"], lines[1]["error_other_values"]]
    assert others == ["external_id=A", "external_id=B"]
