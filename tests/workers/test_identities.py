"""Rows that name the same Klaviyo profile are flagged, in dry runs and runs, with what Klaviyo does.

Real pieces only: PostgreSQL, Redis, an in-process arq worker, and the simulator over HTTP.
"""

from __future__ import annotations

import random
import uuid

import httpx
from sqlmodel import select

from models import RowError, RunStatus, SyncRun
from sync.mapping import Mapping as Spec
from sync.mapping import Target, TargetKind, column
from tests.support.env import unique
from tests.support.runs import csv_text, make_mapping, make_upload, sim_settings, start_run


def _spec(name: str) -> Spec:
    return Spec(
        name=name,
        target=Target(kind=TargetKind.PROFILE),
        fields=[
            column("email", "email"),
            column("phone", "phone_number"),
            column("first", "first_name"),
        ],
    )


async def _warnings(sessionmaker, run_id: int) -> list[tuple[int, str]]:
    async with sessionmaker() as db:
        query = select(RowError).where(RowError.run_id == run_id, RowError.severity == "warning")
        return sorted((e.row_number, e.rule) for e in (await db.exec(query)).all())


async def test_rows_sharing_an_email_or_phone_are_flagged_with_what_klaviyo_does(
    settings, simulator_url, sessionmaker, tmp_path, run_worker_burst
):
    tag = uuid.uuid4().hex[:8]
    phone = f"+479{random.randrange(10**6, 10**7)}"
    rows = [
        {"email": f"Ann-{tag}@Shop.test", "phone": "", "first": "A1"},
        {"email": f" ann-{tag}@shop.test", "phone": "", "first": "A2"},  # the same email, another case
        {"email": f"bo-{tag}@shop.test", "phone": phone, "first": "B3"},
        {"email": f"cy-{tag}@shop.test", "phone": phone, "first": "C4"},  # bo's phone, another person
        {"email": "", "phone": phone, "first": "P5"},  # bo's phone and no email
        {"email": f"bo-{tag}@shop.test", "phone": phone, "first": "B6"},  # bo again: one email note
    ]
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "people.csv")
    mapping = await make_mapping(sessionmaker, _spec(unique("people ")))
    test_settings = sim_settings(settings, simulator_url, tmp_path)

    dry = await start_run(sessionmaker, settings, upload, mapping, dry_run=True)
    await run_worker_burst(test_settings)
    expected = [(2, "duplicate_email"), (4, "duplicate_phone")]
    expected += [(5, "duplicate_phone"), (6, "duplicate_email")]
    assert await _warnings(sessionmaker, dry.id) == expected

    run = await start_run(sessionmaker, settings, upload, mapping)
    await run_worker_burst(test_settings)
    assert await _warnings(sessionmaker, run.id) == expected
    async with sessionmaker() as db:
        done = await db.get(SyncRun, run.id)
        notes = {
            e.row_number: e.message
            for e in (await db.exec(select(RowError).where(RowError.run_id == run.id))).all()
            if e.severity == "warning"
        }
        refused = (
            await db.exec(select(RowError).where(RowError.run_id == run.id, RowError.severity == "error"))
        ).all()
    assert done is not None and done.status == RunStatus.COMPLETED
    assert not refused
    assert "also on row 1" in notes[2] and "update one profile" in notes[2]
    assert "also on row 3" in notes[4] and "changes row 3's profile" in notes[4]
    assert "updates row 3's profile" in notes[5]

    # What the warnings said is what Klaviyo (the simulator) did: one profile per email, one per phone.
    stored = httpx.get(f"{simulator_url}/__sim/profiles").json()["data"]
    assert len([p for p in stored if (p.get("email") or "").lower() == f"ann-{tag}@shop.test"]) == 1
    (holder,) = [p for p in stored if p.get("phone_number") == phone]
    assert holder["first_name"] == "B6" and not [p for p in stored if p.get("email") == f"cy-{tag}@shop.test"]
