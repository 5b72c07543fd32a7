"""A CSV backfill end to end: dry run, send, error CSV, retry of exactly the failed rows.

Real pieces only: PostgreSQL, Redis, an arq worker, and the simulator over HTTP.
"""

from __future__ import annotations

import csv
import io

import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlmodel import select

from models import Role, RowError, RunStatus, SyncBatch, SyncRun, Upload, UploadStatus
from services import error_export
from tests.support.env import unique
from tests.support.runs import (
    add_version,
    csv_text,
    make_mapping,
    make_upload,
    ordered_product_spec,
    sim_settings,
    start_run,
)
from tests.support.web import login, make_user, post_form
from web.app import create_app

GOOD = [
    {
        "email": f"buyer{i}@shop.test",
        "order": f"10{i:02d}",
        "sku": f"SKU-{i}",
        "price": f"{10 + i}.50",
        "time": f"2025-03-{i + 1:02d}T10:00:00Z",
    }
    for i in range(8)
]
BAD = [
    {"email": "nobody-at-all", "order": "2001", "sku": "X", "price": "5", "time": "2025-03-01T10:00:00Z"},
    {"email": "late@shop.test", "order": "2002", "sku": "Y", "price": "n/a", "time": "2025-03-01T10:00:00Z"},
]


@pytest.fixture
async def run_env(settings, simulator_url, sessionmaker, tmp_path):
    test_settings = settings.model_copy(
        update={
            "sandbox_url": simulator_url,
            "klaviyo_time_scale": 20.0,
            "upload_dir": tmp_path,
            "run_lease_seconds": 5.0,
        }
    )
    metric = unique("Ordered Product ")
    upload = await make_upload(sessionmaker, tmp_path, csv_text(GOOD[:4] + BAD + GOOD[4:]))
    mapping = await make_mapping(sessionmaker, ordered_product_spec(metric))
    app = create_app(test_settings)
    async with AsyncTestClient(app) as client:
        operator = await make_user(sessionmaker, unique("op"), Role.OPERATOR)
        assert (await login(client, operator.username)).status_code == 302
        yield client, test_settings, upload, mapping, metric


async def _start(client, upload, mapping, *, dry_run: bool) -> int:
    form = {"upload_id": str(upload.id), "mapping_id": str(mapping.id), "backfill": "1"}
    if dry_run:
        form["dry_run"] = "1"
    response = await post_form(client, "/runs/", form, follow_redirects=False)
    assert response.status_code == 303, response.text
    return int(response.headers["location"].rsplit("/", 1)[1])


def _sim_events(simulator_url: str, metric: str) -> list[dict]:
    return httpx.get(f"{simulator_url}/__sim/events", params={"metric": metric, "limit": 10000}).json()[
        "data"
    ]


async def test_dry_run_then_send_then_retry_failed_rows(
    run_env, run_worker_burst, sessionmaker, simulator_url
):
    client, settings, upload, mapping, metric = run_env

    dry_id = await _start(client, upload, mapping, dry_run=True)
    await run_worker_burst(settings)
    async with sessionmaker() as db:
        dry = await db.get(SyncRun, dry_id)
        errors = (await db.exec(select(RowError).where(RowError.run_id == dry_id))).all()
    assert dry.status == RunStatus.COMPLETED and dry.dry_run
    assert dry.summary["items"] == 8 and dry.rows_failed == 2
    assert sorted((e.row_number, e.column) for e in errors) == [(5, "email"), (6, "price")]
    assert _sim_events(simulator_url, metric) == []  # a dry run sends nothing

    run_id = await _start(client, upload, mapping, dry_run=False)
    await run_worker_burst(settings)
    page = await client.get(f"/runs/{run_id}")
    assert "Finished: 8 events accepted" in page.text
    events = _sim_events(simulator_url, metric)
    assert sorted(e["unique_id"] for e in events) == sorted(f"{r['order']}_{r['sku']}" for r in GOOD)
    assert all(e["backfill"] is True for e in events)
    by_id = {e["unique_id"]: e for e in events}
    first = by_id["1000_SKU-0"]
    assert first["value"] == 10.5 and first["properties"]["SKU"] == "SKU-0"
    assert first["profile"]["email"] == "buyer0@shop.test"
    async with sessionmaker() as db:
        run = await db.get(SyncRun, run_id)
        batches = (await db.exec(select(SyncBatch).where(SyncBatch.run_id == run_id))).all()
    assert run.items_sent == 8 and run.rows_failed == 2 and run.rows_read == 10
    assert [(b.status, b.accepted) for b in batches] == [("sent", 8)]

    # The error CSV lists exactly the bad rows, with their original values, safe for spreadsheets.
    export = await client.get(f"/runs/{run_id}/errors.csv")
    rows = list(csv.DictReader(io.StringIO(export.text.lstrip("\ufeff"))))
    assert [(r["error_row"], r["error_column"]) for r in rows] == [("5", "email"), ("6", "price")]
    assert "nobody-at-all" in rows[0]["email"]  # the row's own cells, under the upload's columns

    # Fix the mapping (stop reading the broken price column), then retry exactly the failed rows.
    await add_version(sessionmaker, mapping.id, ordered_product_spec(metric, with_price=False))
    retry = await post_form(client, f"/runs/{run_id}/retry", follow_redirects=False)
    retry_id = int(retry.headers["location"].rsplit("/", 1)[1])
    await run_worker_burst(settings)
    async with sessionmaker() as db:
        again = await db.get(SyncRun, retry_id)
    assert again.status == RunStatus.COMPLETED and again.only_rows == [5, 6]
    assert again.items_sent == 1 and again.rows_failed == 1  # the price is fixed; the email is not
    events = _sim_events(simulator_url, metric)
    assert len(events) == 9 and "2002_Y" in {e["unique_id"] for e in events}


async def test_backfill_can_be_switched_off(run_env, run_worker_burst, simulator_url):
    client, settings, upload, mapping, metric = run_env
    form = {"upload_id": str(upload.id), "mapping_id": str(mapping.id)}
    response = await post_form(client, "/runs/", form, follow_redirects=False)
    assert response.status_code == 303
    await run_worker_burst(settings)
    events = _sim_events(simulator_url, metric)
    assert len(events) == 8 and all(e["backfill"] is False for e in events)


async def test_viewer_cannot_start_runs(client, as_role):
    await as_role(Role.VIEWER)
    response = await post_form(client, "/runs/", {"upload_id": "1", "mapping_id": "1"})
    assert response.status_code == 403


async def test_formula_cells_are_neutralised_in_the_error_csv():
    from services.error_export import neutralise

    assert neutralise('=HYPERLINK("x")') == '\'=HYPERLINK("x")'
    assert neutralise("+1") == "'+1" and neutralise("-2") == "'-2" and neutralise("@a") == "'@a"
    assert neutralise("ok") == "ok"


async def test_items_klaviyo_rejects_become_row_errors(settings, sessionmaker, tmp_path, run_worker_burst):
    """The account is at its metric limit, which only Klaviyo knows: every item comes back in a 400."""
    from simulator.server import SimulatorProcess

    metric = unique("Over the limit ")
    rows = [
        {
            "email": f"ok{i}@shop.test",
            "order": f"R{i}",
            "sku": "S",
            "price": "1",
            "time": "2025-01-01T00:00:00Z",
        }
        for i in range(5)
    ]
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows))
    mapping = await make_mapping(sessionmaker, ordered_product_spec(metric))
    with SimulatorProcess(time_scale=20) as sim:
        sim.configure(metric_limit=0)
        test_settings = sim_settings(settings, sim.base_url, tmp_path)
        run = await start_run(sessionmaker, settings, upload, mapping)
        await run_worker_burst(test_settings)
        stored = _sim_events(sim.base_url, metric)
    async with sessionmaker() as db:
        done = await db.get(SyncRun, run.id)
        errors = (await db.exec(select(RowError).where(RowError.run_id == run.id))).all()
    assert done.status == RunStatus.COMPLETED and done.items_sent == 0 and done.rows_failed == 5
    assert sorted((e.row_number, e.stage) for e in errors) == [(n, "klaviyo") for n in range(1, 6)]
    assert all("metric" in e.values["pointer"] and e.values["email"].startswith("ok") for e in errors)
    assert stored == []


async def test_rows_the_reader_cannot_use_are_source_errors(
    settings, simulator_url, sessionmaker, tmp_path, run_worker_burst
):
    metric = unique("Source ")
    good = csv_text(GOOD[:3])
    text = (
        good
        + "extra@shop.test,3001,SKU,9.50,2025-03-01T10:00:00Z,surplus\n"
        + csv_text(GOOD[3:5]).split("\n", 1)[1]
    )
    upload = await make_upload(sessionmaker, tmp_path, text)
    mapping = await make_mapping(sessionmaker, ordered_product_spec(metric))
    test_settings = sim_settings(settings, simulator_url, tmp_path)
    run = await start_run(sessionmaker, settings, upload, mapping)
    await run_worker_burst(test_settings)
    async with sessionmaker() as db:
        done = await db.get(SyncRun, run.id)
        errors = (await db.exec(select(RowError).where(RowError.run_id == run.id))).all()
    assert done.status == RunStatus.COMPLETED and done.items_sent == 5 and done.rows_failed == 1
    assert [(e.row_number, e.stage, e.rule) for e in errors] == [(4, "source", "extra_cells")]


async def test_the_error_csv_fixed_in_a_spreadsheet_uploads_and_sends(
    run_env, run_worker_burst, sessionmaker, simulator_url
):
    """Download the failed rows, fix a cell, upload that file, run it with the same mapping."""
    client, settings, upload, mapping, metric = run_env
    run_id = await _start(client, upload, mapping, dry_run=False)
    await run_worker_burst(settings)
    export = await client.get(f"/runs/{run_id}/errors.csv")
    text = export.text.lstrip("\ufeff")
    reader = csv.DictReader(io.StringIO(text))
    # The upload's own columns first, in its order, then the error columns.
    assert reader.fieldnames is not None and reader.fieldnames[:5] == list(GOOD[0])
    assert reader.fieldnames[5:] == list(error_export.ERROR_HEADER)
    rows = list(reader)
    assert [(r["order"], r["email"], r["price"]) for r in rows] == [
        ("2001", "nobody-at-all", "5"),
        ("2002", "late@shop.test", "n/a"),
    ]
    # The operator fixes both cells in the spreadsheet and uploads the file again.
    rows[0]["email"], rows[1]["price"] = "found@shop.test", "7.25"
    fixed = io.StringIO()
    writer = csv.DictWriter(fixed, fieldnames=reader.fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    response = await client.post(
        "/uploads/?name=run-errors-fixed.csv",
        content=fixed.getvalue().encode(),
        headers={
            "x-csrftoken": client.cookies["kc_csrf"],
            "content-type": "application/octet-stream",
            "accept": "application/json",
        },
    )
    assert response.status_code == 201, response.text
    await run_worker_burst(settings)
    async with sessionmaker() as db:
        again = await db.get(Upload, response.json()["id"])
    assert again is not None and again.status == UploadStatus.READY and again.row_count == 2

    retry_id = await _start(client, again, mapping, dry_run=False)
    await run_worker_burst(settings)
    async with sessionmaker() as db:
        retry = await db.get(SyncRun, retry_id)
    assert retry.status == RunStatus.COMPLETED and retry.rows_failed == 0 and retry.items_sent == 2
    by_id = {e["unique_id"]: e for e in _sim_events(simulator_url, metric)}
    assert by_id["2001_X"]["profile"]["email"] == "found@shop.test"
    assert by_id["2002_Y"]["value"] == 7.25
