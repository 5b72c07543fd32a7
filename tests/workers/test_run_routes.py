"""Runs over uploads and feed records route each record by its event name: a record of an event the
run has no mapping for is skipped as ``unrouted: <event>`` (counted, listed, never mapped by another
event's mapping), and goes out once routed. Real pieces: PostgreSQL, Redis, a worker, the simulator."""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from models import RowError, RunStatus, SyncRun, Upload, UploadStatus
from services import runs
from services.accounts import get_account
from services.error_export import error_csv
from sync.presets import ecommerce_event_mapping
from tests.conftest import unique
from tests.support.ecommerce_spec import EXAMPLES, expected
from tests.support.runs import make_mapping, sim_settings, start_run
from tests.workers.test_ingest_forward import sim_events


@pytest.fixture
def env(settings, simulator_url, tmp_path):
    return sim_settings(settings, simulator_url, tmp_path)


@pytest.fixture(autouse=True)
async def sandbox_account(sessionmaker):
    async with sessionmaker() as db:
        (await get_account(db)).sandbox = True
        await db.commit()


def person(event: str, email: str) -> dict[str, Any]:
    """The spec's documented example of ``event``, made by this test's shopper."""
    call = copy.deepcopy(EXAMPLES[event])
    call["context"] = {"traits": {"email": email}}
    call["userId"] = "user-" + email.partition("@")[0]
    return call


async def records_upload(sessionmaker, upload_dir: Path, records: list[dict[str, Any]]) -> Upload:
    """Records stored as a feed tick stores them (NDJSON), ready to run."""
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    stored = f"feed-{uuid.uuid4().hex}.ndjson"
    Path(upload_dir).mkdir(parents=True, exist_ok=True)
    (Path(upload_dir) / stored).write_bytes(data)
    async with sessionmaker() as db:
        upload = Upload(
            filename="events.ndjson",
            stored_as=stored,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            status=UploadStatus.READY,
            encoding="utf-8",
            headers=sorted({key for r in records for key in r}),
            row_count=len(records),
        )
        db.add(upload)
        await db.commit()
        return upload


def shopper() -> str:
    return f"{unique('route').replace(' ', '')}@shop.test"


def mine(simulator_url: str, metric: str, email: str) -> list[dict[str, Any]]:
    return [e for e in sim_events(simulator_url, metric) if e["profile"].get("email") == email]


async def row_errors(sessionmaker, run_id: int) -> list[RowError]:
    async with sessionmaker() as db:
        query = select(RowError).where(RowError.run_id == run_id).order_by(RowError.row_number)
        return list((await db.exec(query)).all())


async def csv_of(sessionmaker, run_id: int) -> str:
    return "".join([part async for part in error_csv(sessionmaker, run_id)])


async def test_a_record_of_another_event_is_unrouted_not_mapped_by_the_runs_mapping(
    sessionmaker, env, simulator_url, run_worker_burst
):
    email = shopper()
    upload = await records_upload(
        sessionmaker,
        env.upload_dir,
        [person("Product Added", email), person("Order Completed", email), person("Order Completed", email)],
    )
    mapping = await make_mapping(sessionmaker, ecommerce_event_mapping("Product Added"))
    run = await start_run(sessionmaker, env, upload, mapping, backfill=False)
    await run_worker_burst(env)

    added = mine(simulator_url, "Added to Cart", email)
    assert [e["unique_id"] for e in added] == [EXAMPLES["Product Added"]["messageId"]]
    assert added[0]["properties"] == expected("Product Added")[0]["properties"]
    assert mine(simulator_url, "Placed Order", email) == []
    async with sessionmaker() as db:
        done = await db.get(SyncRun, run.id)
        assert done.status == RunStatus.COMPLETED
        assert (done.rows_read, done.rows_failed, done.rows_skipped, done.rows_ok) == (3, 0, 2, 1)
        assert done.summary["unrouted"] == {"Order Completed": 2}
        assert await runs.failed_rows(db, run.id) == []  # a skip is not a retry candidate
    skipped = await row_errors(sessionmaker, run.id)
    assert [(e.row_number, e.severity, e.rule, e.message) for e in skipped] == [
        (2, "skipped", "unrouted", "unrouted: Order Completed"),
        (3, "skipped", "unrouted", "unrouted: Order Completed"),
    ]
    assert "unrouted: Order Completed" in await csv_of(sessionmaker, run.id)


async def test_a_dry_run_counts_the_unrouted_records_by_name(sessionmaker, env, run_worker_burst):
    email = shopper()
    upload = await records_upload(
        sessionmaker,
        env.upload_dir,
        [person("Order Completed", email), person("Product Viewed", email), person("Order Refunded", email)],
    )
    mapping = await make_mapping(sessionmaker, ecommerce_event_mapping("Order Completed"))
    run = await start_run(sessionmaker, env, upload, mapping, dry_run=True)
    await run_worker_burst(env)
    async with sessionmaker() as db:
        done = await db.get(SyncRun, run.id)
        assert done.status == RunStatus.COMPLETED
        assert done.summary["unrouted"] == {"Product Viewed": 1, "Order Refunded": 1}
        assert done.summary["items"] == 3  # Placed Order and one Ordered Product per product
        assert done.rows_failed == 0


async def start_routed(sessionmaker, env, upload: Upload, choice: str, **kwargs: Any) -> SyncRun:
    from arq.connections import ArqRedis

    from services import run_routes

    async with sessionmaker() as db:
        routing = await run_routes.resolve_route_set(db, choice, None)
        run = await run_routes.start_routed_run(
            db, upload_id=upload.id, routing=routing, dry_run=False, backfill=False, user=None, **kwargs
        )
        await db.commit()
    arq = ArqRedis.from_url(env.redis_url)
    try:
        await runs.enqueue(arq, env.queue_name, run, "start")
    finally:
        await arq.aclose()
    return run


async def test_a_run_routed_by_the_spec_sends_every_documented_event_as_the_guides_payload(
    sessionmaker, env, simulator_url, run_worker_burst
):
    email = shopper()
    records = [person(event, email) for event in EXAMPLES] + [
        {**person("Product Added", email), "event": "Wishlist Shared"}
    ]
    upload = await records_upload(sessionmaker, env.upload_dir, records)
    run = await start_routed(sessionmaker, env, upload, "route:spec")
    await run_worker_burst(env)

    async with sessionmaker() as db:
        done = await db.get(SyncRun, run.id)
        assert done.status == RunStatus.COMPLETED, done.error_message
        assert done.rows_failed == 0 and done.summary["unrouted"] == {"Wishlist Shared": 1}
        assert done.kind == "order" and done.options["routing"]["set"] == "the ecommerce spec"
    for event in EXAMPLES:
        for want in expected(event):
            got = [
                e for e in mine(simulator_url, want["metric"], email) if e["unique_id"] == want["unique_id"]
            ]
            assert len(got) == 1, f"{event}: {want['metric']} {want['unique_id']} did not land once"
            assert got[0]["properties"] == want["properties"], event
            assert got[0]["value"] == want.get("value"), event


async def test_route_and_send_takes_exactly_the_unrouted_records_through_the_chosen_mapping(
    sessionmaker, env, simulator_url, run_worker_burst
):
    from arq.connections import ArqRedis

    from services import run_routes

    email = shopper()
    upload = await records_upload(
        sessionmaker,
        env.upload_dir,
        [
            person("Product Added", email),
            person("Order Completed", email),
            person("Products Searched", email),
        ],
    )
    added = await make_mapping(sessionmaker, ecommerce_event_mapping("Product Added"))
    placed = await make_mapping(sessionmaker, ecommerce_event_mapping("Order Completed"))
    first = await start_run(sessionmaker, env, upload, added, backfill=False)
    await run_worker_burst(env)
    assert mine(simulator_url, "Placed Order", email) == []

    async with sessionmaker() as db:
        parent = await db.get(SyncRun, first.id)
        picks = await run_routes.unrouted_picks(db, parent)
        assert [(p.name, p.count) for p in picks] == [("Order Completed", 1), ("Products Searched", 1)]
        again = await run_routes.route_unrouted(db, parent, {"Order Completed": placed.id}, None)
        await db.commit()
        assert again.only_rows == [2] and again.parent_run_id == first.id
        assert parent.summary["unrouted_runs"] == [again.id]
    arq = ArqRedis.from_url(env.redis_url)
    try:
        await runs.enqueue(arq, env.queue_name, again, "start")
    finally:
        await arq.aclose()
    await run_worker_burst(env)

    async with sessionmaker() as db:
        done = await db.get(SyncRun, again.id)
        assert done.status == RunStatus.COMPLETED, done.error_message
        assert (done.rows_read, done.rows_failed, done.items_sent) == (1, 0, 3)
    want = expected("Order Completed")
    for event in want:
        got = [e for e in mine(simulator_url, event["metric"], email) if e["unique_id"] == event["unique_id"]]
        assert len(got) == 1 and got[0]["properties"] == event["properties"], event["metric"]
    assert len(mine(simulator_url, "Added to Cart", email)) == 1
    assert mine(simulator_url, "Searched Site", email) == []


async def test_a_schedule_routed_by_event_name_sends_each_feed_record_through_its_events_mapping(
    sessionmaker, env, simulator_url, run_worker_burst
):
    from services import schedules
    from tests.support.feed_server import feed_server
    from tests.workers.test_schedules import _tick

    email = shopper()
    events = ["Product Added", "Order Completed", "Order Refunded"]
    records = [person(event, email) for event in events] + [
        {**person("Product Added", email), "event": "Wishlist Shared", "messageId": "wish-1"}
    ]
    for number, record in enumerate(records):
        # A feed must say when each event happened (or the schedule must choose the received time).
        when = f"2026-01-0{number + 1}T10:00:00Z"
        record.update(order_id=f"r{number}", updated_at=when, timestamp=when)
    with feed_server() as feed:
        feed.state.orders = records
        form = {
            "name": unique("routed feed"),
            "mapping_id": "route:spec",
            "url": f"{feed.url}/orders.json",
            "records_path": "orders",
            "cursor_kind": "none",
            "key_field": "messageId",
            "next_page_path": "next",
            "timing": "interval",
            "interval_minutes": "60",
        }
        async with sessionmaker() as db:
            schedule = await schedules.create_schedule(db, env, schedules.ScheduleForm.from_form(form), None)
            await db.commit()
            assert schedule.route_set == "spec"
            assert (
                schedules.form_values(schedule, await db.get(schedules.FeedSource, schedule.source_id))[
                    "mapping_id"
                ]
                == "route:spec"
            )
        tick = await _tick(sessionmaker, env, run_worker_burst, schedule.id)
    assert tick.outcome == "queued_run", tick.message
    async with sessionmaker() as db:
        run = await db.get(SyncRun, tick.run_id)
        assert run.status == RunStatus.COMPLETED, run.error_message
        assert run.options["routing"]["set"] == "the ecommerce spec"
        assert run.summary["unrouted"] == {"Wishlist Shared": 1} and run.rows_failed == 0
    for event in events:
        for want in expected(event):
            got = [
                e for e in mine(simulator_url, want["metric"], email) if e["unique_id"] == want["unique_id"]
            ]
            assert len(got) == 1 and got[0]["properties"] == want["properties"], (event, want["metric"])
    assert len(mine(simulator_url, "Added to Cart", email)) == 1


async def test_a_retry_of_a_routed_run_sends_the_failed_order_whole_through_its_routes_current_version(
    sessionmaker, env, simulator_url, run_worker_burst
):
    from services import ingest_routes, run_routes
    from sync.mapping import ConstantSource
    from tests.support.ingest import make_source
    from tests.support.runs import add_version

    email = shopper()
    spec = ecommerce_event_mapping("Order Completed")
    spec = spec.model_copy(update={"name": unique("orders by route")})
    source, _, _, mapping = await make_source(sessionmaker, env, spec)
    async with sessionmaker() as db:
        await ingest_routes.add_route(db, source, "order completed", mapping.id)
        await db.commit()
    broken = person("Order Completed", email)
    broken["context"]["traits"]["email"] = "not-an-email"
    del broken["userId"]
    upload = await records_upload(sessionmaker, env.upload_dir, [broken, person("Product Viewed", email)])
    first = await start_routed(sessionmaker, env, upload, f"route:ingest:{source.id}")
    await run_worker_burst(env)
    async with sessionmaker() as db:
        parent = await db.get(SyncRun, first.id)
        assert (parent.rows_failed, parent.rows_skipped) == (1, 1)
        assert parent.summary["unrouted"] == {"Product Viewed": 1}
        assert await runs.failed_rows(db, first.id) == [1]  # the unrouted record is not a retry candidate

    # The mapping is fixed (the store's email comes from elsewhere): the retry goes through it.
    fields = [
        rule.model_copy(update={"source": ConstantSource(value=email)}) if rule.target == "email" else rule
        for rule in spec.fields
    ]
    await add_version(sessionmaker, mapping.id, spec.model_copy(update={"fields": fields}))
    async with sessionmaker() as db:
        parent = await db.get(SyncRun, first.id)
        retry = await runs.retry_failed(db, parent, None)
        await run_routes.repin(db, retry)
        await db.commit()
        assert {r["version"] for r in retry.options["routing"]["routes"]} == {2}
    from arq.connections import ArqRedis

    arq = ArqRedis.from_url(env.redis_url)
    try:
        await runs.enqueue(arq, env.queue_name, retry, "start")
    finally:
        await arq.aclose()
    await run_worker_burst(env)
    async with sessionmaker() as db:
        done = await db.get(SyncRun, retry.id)
        assert done.status == RunStatus.COMPLETED, done.error_message
        assert (done.rows_read, done.rows_failed, done.items_sent) == (1, 0, 3)
    for want in expected("Order Completed"):
        got = [e for e in mine(simulator_url, want["metric"], email) if e["unique_id"] == want["unique_id"]]
        assert len(got) == 1, want["metric"]
    assert mine(simulator_url, "Viewed Product", email) == []
