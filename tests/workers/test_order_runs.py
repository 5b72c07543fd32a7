"""An order (a grouped record) is one unit from dry run to retry.

A Shopify-style line-item export: several CSV rows per order, order columns on the first line only,
repeated SKUs. Real pieces only: PostgreSQL, Redis, an arq worker, and the simulator over HTTP.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlmodel import select

from models import Role, RowError, RunStatus, SyncRun
from sync.mapping import Mapping as Spec
from sync.pipeline import run_pipeline
from tests.support.env import unique
from tests.support.orders import LINES, ROWS, order_spec
from tests.support.runs import add_version, csv_text, make_mapping, make_upload, sim_settings, start_run
from tests.support.web import login, make_user, post_form
from web.app import create_app


def _stored(simulator_url: str, metric: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{simulator_url}/__sim/events", params={"metric": metric, "limit": 10000})
    return list(answer.json()["data"])


def _clean_ids(spec: Spec, rows: list[dict[str, str]]) -> dict[str, list[str]]:
    """The unique ids a clean first send of these rows gives, by order."""
    ids: dict[str, list[str]] = {}
    for result in run_pipeline(spec, list(enumerate(rows, start=1))):
        for item in result.items:
            event = item["attributes"]["events"]["data"][0]["attributes"]
            ids.setdefault(event["properties"]["OrderId"], []).append(event["unique_id"])
    return ids


@pytest.fixture
async def orders_env(settings, simulator_url, sessionmaker, tmp_path):
    test_settings = sim_settings(settings, simulator_url, tmp_path, run_lease_seconds=5.0)
    placed, line = unique("Placed Order "), unique("Ordered Product ")
    upload = await make_upload(sessionmaker, tmp_path, csv_text(ROWS), filename="orders_export.csv")
    mapping = await make_mapping(sessionmaker, order_spec(placed, line, fixed=False))
    app = create_app(test_settings)
    async with AsyncTestClient(app) as client:
        operator = await make_user(sessionmaker, unique("op"), Role.OPERATOR)
        assert (await login(client, operator.username)).status_code == 302
        yield client, test_settings, upload, mapping, placed, line


async def _errors(sessionmaker, run_id: int) -> list[RowError]:
    async with sessionmaker() as db:
        query = select(RowError).where(RowError.run_id == run_id).order_by(RowError.row_number)
        return list((await db.exec(query)).all())


async def _run(sessionmaker, run_id: int) -> SyncRun:
    async with sessionmaker() as db:
        run = await db.get(SyncRun, run_id)
        assert run is not None
        return run


async def _retry(client, run_id: int) -> int:
    answer = await post_form(client, f"/runs/{run_id}/retry", follow_redirects=False)
    assert answer.status_code in (302, 303), answer.text
    return int(answer.headers["location"].rsplit("/", 1)[1])


def _error_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))


async def test_dry_run_counts_every_row_of_a_failed_order_once(
    orders_env, run_worker_burst, sessionmaker, simulator_url
):
    client, settings, upload, mapping, placed, line = orders_env
    dry = await start_run(sessionmaker, settings, upload, mapping, dry_run=True)
    await run_worker_burst(settings)
    done = await _run(sessionmaker, dry.id)
    # #1002, #1003 and #1005 fail: 2 + 3 + 2 CSV rows.
    assert done.status == RunStatus.COMPLETED and done.rows_failed == 7
    page = (await client.get(f"/runs/{dry.id}")).text
    # #1003's out-of-range time: every row of the order, 4 events (Placed Order + 3 lines), rows listed once.
    assert 'data-testid="rule-time_out_of_range"' in page
    row = page.split('data-testid="rule-time_out_of_range"', 1)[1].split("</tr>", 1)[0]
    assert '<td class="num">3</td><td class="num">4</td>' in row  # rows, then events
    assert "6, 7, 8" in row and "6, 6" not in row
    assert _stored(simulator_url, placed) == []


async def test_error_csv_lists_each_row_of_a_failed_order_once_with_its_own_values(
    orders_env, run_worker_burst, sessionmaker
):
    client, settings, upload, mapping, _placed, _line = orders_env
    run = await start_run(sessionmaker, settings, upload, mapping)
    await run_worker_burst(settings)
    errors = await _errors(sessionmaker, run.id)
    assert sorted({e.row_number for e in errors if e.severity == "error"}) == [4, 5, 6, 7, 8, 10, 11]
    by_row = {e.row_number: e for e in errors}
    # The line that broke #1005 is named; its other line fails with it, saying why.
    assert by_row[11].rule == "not_a_number" and by_row[10].rule == "order_rejected"
    assert "row 11" in by_row[10].message

    export = _error_csv((await client.get(f"/runs/{run.id}/errors.csv")).text)
    assert [r["error_row"] for r in export] == ["4", "5", "6", "7", "8", "10", "11"]
    assert [r["error_rule"] for r in export[2:5]] == ["time_out_of_range"] * 3
    # Each row carries its own original values, not the order's first line's.
    assert export[4]["Lineitem sku"] == "CUP"
    assert export[3]["Lineitem sku"] == "MUG"
    assert export[6]["Lineitem price"] == "n/a"
    done = await _run(sessionmaker, run.id)
    assert done.rows_failed == 7 and done.rows_read == 11
    assert {e.group_key for e in errors} == {"#1002", "#1003", "#1005"}


async def test_retry_sends_every_failed_order_whole_and_a_second_retry_sends_nothing(
    orders_env, run_worker_burst, sessionmaker, simulator_url
):
    client, settings, upload, mapping, placed, line = orders_env
    run = await start_run(sessionmaker, settings, upload, mapping)
    await run_worker_burst(settings)
    first = _stored(simulator_url, placed)
    assert sorted(e["properties"]["OrderId"] for e in first) == ["#1001", "#1004"]

    fixed = order_spec(placed, line, fixed=True)
    await add_version(sessionmaker, mapping.id, fixed)
    retry_id = await _retry(client, run.id)
    await run_worker_burst(settings)
    retried = await _run(sessionmaker, retry_id)
    # It read the failed orders' rows (7), not the file's 11; #1005's price is still not a number.
    assert retried.status == RunStatus.COMPLETED
    assert (retried.total_rows, retried.rows_read, retried.rows_failed) == (7, 7, 2)
    page = (await client.get(f"/runs/{retry_id}")).text
    assert "from 7 rows; 2 rows failed" in page

    # Klaviyo holds only whole orders, with exactly the ids a clean first send gives.
    clean = _clean_ids(fixed, ROWS)
    orders = {e["properties"]["OrderId"]: e for e in _stored(simulator_url, placed)}
    assert sorted(orders) == ["#1001", "#1002", "#1003", "#1004"]
    lines = _stored(simulator_url, line)
    for order_id, event in orders.items():
        assert len(event["properties"]["Items"]) == LINES[order_id]
        mine = sorted(e["unique_id"] for e in lines if e["properties"]["OrderId"] == order_id)
        assert len(mine) == LINES[order_id]
        assert sorted([event["unique_id"], *mine]) == sorted(clean[order_id])
    assert sorted(e["unique_id"] for e in lines if e["properties"]["OrderId"] == "#1003") == [
        "#1003_CUP",
        "#1003_MUG",
        "#1003_MUG_2",
    ]

    # Retrying the retry takes #1005 again (still broken): nothing more reaches Klaviyo.
    before = len(_stored(simulator_url, placed)) + len(lines)
    again_id = await _retry(client, retry_id)
    await run_worker_burst(settings)
    again = await _run(sessionmaker, again_id)
    assert (again.rows_read, again.rows_failed, again.items_sent) == (2, 2, 0)
    assert len(_stored(simulator_url, placed)) + len(_stored(simulator_url, line)) == before


async def test_retry_of_a_run_that_recorded_only_first_rows_rebuilds_orders_by_their_id(
    orders_env, run_worker_burst, sessionmaker, simulator_url
):
    """Runs before orders were one unit recorded an order's failure on its first row only."""
    client, settings, upload, mapping, placed, line = orders_env
    run = await start_run(sessionmaker, settings, upload, mapping)
    await run_worker_burst(settings)
    async with sessionmaker() as db:
        for error in await _errors(sessionmaker, run.id):
            if error.row_number not in (4, 6, 10):
                await db.delete(await db.get(RowError, error.id))
            else:
                error.group_key = None
                db.add(error)
        await db.commit()
    await add_version(sessionmaker, mapping.id, order_spec(placed, line, fixed=True))
    retry_id = await _retry(client, run.id)
    await run_worker_burst(settings)
    retried = await _run(sessionmaker, retry_id)
    assert (retried.total_rows, retried.rows_read) == (7, 7)
    orders = {e["properties"]["OrderId"]: e for e in _stored(simulator_url, placed)}
    assert {k: len(v["properties"]["Items"]) for k, v in orders.items()} == {
        "#1001": 3,
        "#1002": 2,
        "#1003": 3,
        "#1004": 1,
    }


async def test_an_order_that_cannot_be_rebuilt_whole_is_refused(
    orders_env, run_worker_burst, sessionmaker, simulator_url
):
    """The failed run had #1003 on rows 6-8; the file no longer groups row 8 with it."""
    client, settings, upload, mapping, placed, line = orders_env
    run = await start_run(sessionmaker, settings, upload, mapping)
    await run_worker_burst(settings)
    async with sessionmaker() as db:
        eight = (
            await db.exec(select(RowError).where(RowError.run_id == run.id, RowError.row_number == 8))
        ).one()
        eight.row_number = 12  # a row the file does not have
        db.add(eight)
        await db.commit()
    await add_version(sessionmaker, mapping.id, order_spec(placed, line, fixed=True))
    retry_id = await _retry(client, run.id)
    await run_worker_burst(settings)
    errors = [e for e in await _errors(sessionmaker, retry_id) if e.rule == "order_incomplete"]
    assert [e.row_number for e in errors] == [6, 7, 8]
    assert "order #1003 cannot be rebuilt whole: row 12" in errors[0].message
    assert "#1003" not in {e["properties"]["OrderId"] for e in _stored(simulator_url, placed)}
    assert "#1003" not in {e["properties"]["OrderId"] for e in _stored(simulator_url, line)}


async def test_events_klaviyo_refuses_fail_every_row_of_their_order_and_the_retry_completes_it(
    settings, sessionmaker, tmp_path, run_worker_burst
):
    """Room for one new metric: Klaviyo keeps the Placed Orders and refuses every Ordered Product."""
    from arq.connections import ArqRedis

    from services import runs
    from services.error_export import error_csv
    from simulator.server import SimulatorProcess

    placed, line = unique("Placed Order "), unique("Ordered Product ")
    rows = ROWS[:9]  # #1001-#1004: 3 + 2 + 3 + 1 lines
    fixed = order_spec(placed, line, fixed=True)
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows))
    mapping = await make_mapping(sessionmaker, fixed)
    with SimulatorProcess(time_scale=20) as sim:
        sim.configure(metric_limit=1)
        test_settings = sim_settings(settings, sim.base_url, tmp_path)
        run = await start_run(sessionmaker, settings, upload, mapping)
        await run_worker_burst(test_settings)
        assert len(_stored(sim.base_url, placed)) == 4 and _stored(sim.base_url, line) == []
        done = await _run(sessionmaker, run.id)
        assert done.rows_failed == 9 and done.items_sent == 4
        async with sessionmaker() as db:
            (group,) = await runs.errors_by_rule(db, run.id)
        assert (group["stage"], group["count"], group["events"]) == ("klaviyo", 9, 9)
        export = _error_csv("".join([chunk async for chunk in error_csv(sessionmaker, run.id)]))
        assert [int(r["error_row"]) for r in export] == list(range(1, 10))
        assert export[2]["Lineitem sku"] == "TEA"

        sim.configure(metric_limit=200)
        async with sessionmaker() as db:
            retry = await runs.retry_failed(db, done, None)
            await db.commit()
        arq = ArqRedis.from_url(settings.redis_url)
        try:
            await runs.enqueue(arq, settings.queue_name, retry, "start")
        finally:
            await arq.aclose()
        await run_worker_burst(test_settings)
        again = await _run(sessionmaker, retry.id)
        assert (again.rows_read, again.rows_failed) == (9, 0)
        orders = _stored(sim.base_url, placed)
        lines = _stored(sim.base_url, line)
    clean = _clean_ids(fixed, rows)
    assert sorted(e["properties"]["OrderId"] for e in orders) == ["#1001", "#1002", "#1003", "#1004"]
    for event in orders:
        order_id = event["properties"]["OrderId"]
        mine = [e["unique_id"] for e in lines if e["properties"]["OrderId"] == order_id]
        assert len(event["properties"]["Items"]) == len(mine) == LINES[order_id]
        assert sorted([event["unique_id"], *mine]) == sorted(clean[order_id])


async def test_an_order_whose_rows_are_apart_is_not_sent_in_part_and_its_retry_sends_it_whole(
    orders_env, run_worker_burst, sessionmaker, simulator_url
):
    client, settings, _upload, _mapping, placed, line = orders_env
    fixed = order_spec(placed, line, fixed=True)
    # #1001's third line comes after #1004: the export was not sorted by order.
    rows = [ROWS[0], ROWS[1], ROWS[8], ROWS[2]]
    upload = await make_upload(sessionmaker, settings.upload_dir, csv_text(rows))
    mapping = await make_mapping(sessionmaker, fixed)
    run = await start_run(sessionmaker, settings, upload, mapping)
    await run_worker_burst(settings)
    assert [e["properties"]["OrderId"] for e in _stored(simulator_url, placed)] == ["#1004"]
    errors = await _errors(sessionmaker, run.id)
    assert sorted({e.row_number for e in errors}) == [1, 2, 4]
    assert "sort the file by order id" in errors[0].message

    retry_id = await _retry(client, run.id)
    await run_worker_burst(settings)
    assert (await _run(sessionmaker, retry_id)).rows_failed == 0
    (order,) = [e for e in _stored(simulator_url, placed) if e["properties"]["OrderId"] == "#1001"]
    assert [item["SKU"] for item in order["properties"]["Items"]] == ["MUG", "MUG", "TEA"]
    lines = _stored(simulator_url, line)
    ids = sorted(e["unique_id"] for e in lines if e["properties"]["OrderId"] == "#1001")
    assert ids == ["#1001_MUG", "#1001_MUG_2", "#1001_TEA"]


async def test_a_failed_order_the_file_no_longer_has_fails_again_saying_so(
    orders_env, run_worker_burst, sessionmaker
):
    client, settings, upload, mapping, placed, line = orders_env
    run = await start_run(sessionmaker, settings, upload, mapping)
    await run_worker_burst(settings)
    async with sessionmaker() as db:
        for error in await _errors(sessionmaker, run.id):
            if error.group_key == "#1005":
                error.group_key, error.row_number = "#1099", error.row_number + 100
                db.add(error)
        await db.commit()
    await add_version(sessionmaker, mapping.id, order_spec(placed, line, fixed=True))
    retry_id = await _retry(client, run.id)
    await run_worker_burst(settings)
    lost = [e for e in await _errors(sessionmaker, retry_id) if e.group_key == "#1099"]
    assert sorted(e.row_number for e in lost) == [110, 111]
    assert all("no longer has its rows" in e.message for e in lost)
