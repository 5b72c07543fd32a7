"""Schedules end to end: a real feed server on loopback, PostgreSQL, Redis, arq workers and the
simulator. Each tick must send exactly what is new; failures must show and heal on later ticks."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import timedelta

import httpx
from arq.connections import ArqRedis
from sqlalchemy import update
from sqlmodel import col, select

from models import FeedRecordSeen, FeedSource, RunSource, RunStatus, Schedule, ScheduleTick, SyncRun, Upload
from models.base import aware, utcnow
from services import notifications, schedules
from simulator.config import SANDBOX_KEY
from simulator.server import SimulatorProcess
from sync.mapping import (
    DateParse,
    Email,
    FieldRule,
    MappingOptions,
    NumberCast,
    PathSource,
    Target,
    TargetKind,
    column,
)
from sync.mapping import Mapping as Spec
from tests.support.feed_server import feed_server, order
from tests.support.runs import make_mapping
from tests.support.sandbox import sim_catalog
from tests.support.specs import item_spec, order_spec
from workers.schedules import schedule_ticks


async def _schedule(sessionmaker, settings, mapping_id: int, url: str, **fields: str) -> Schedule:
    form = {
        "name": f"orders {uuid.uuid4().hex[:6]}",
        "mapping_id": str(mapping_id),
        "url": url,
        "records_path": "orders",
        "cursor_kind": "field",
        "cursor_field": "updated_at",
        "cursor_param": "updated_since",
        "key_field": "order_id",
        "next_page_path": "next",
        "timing": "interval",
        "interval_minutes": "60",
        "backfill": "1",
        **fields,
    }
    async with sessionmaker() as db:
        schedule = await schedules.create_schedule(db, settings, schedules.ScheduleForm.from_form(form), None)
        await db.commit()
        return schedule


async def _tick(sessionmaker, settings, run_worker_burst, schedule_id: int) -> ScheduleTick:
    """Run now, as the Schedules page does, and let a worker do the tick and its run."""
    arq = ArqRedis.from_url(settings.redis_url)
    try:
        await schedules.enqueue_tick(arq, settings.queue_name, schedule_id, "manual", uuid.uuid4().hex)
    finally:
        await arq.aclose()
    await run_worker_burst(settings)
    async with sessionmaker() as db:
        query = select(ScheduleTick).where(ScheduleTick.schedule_id == schedule_id)
        return (await db.exec(query.order_by(col(ScheduleTick.id).desc()))).first()


def _events(simulator_url: str, metric: str) -> list[dict]:
    answer = httpx.get(f"{simulator_url}/__sim/events", params={"metric": metric, "limit": 1000})
    return answer.json()["data"]


def _order_ids(events: list[dict]) -> list[str]:
    return sorted(e["properties"]["OrderId"] for e in events)


async def test_each_tick_sends_only_the_new_orders(
    run_settings,  # noqa: F811
    sessionmaker,
    run_worker_burst,
    simulator_url,
):
    tag, metric = uuid.uuid4().hex[:6], f"Feed Order {uuid.uuid4().hex[:6]}"
    mapping = await make_mapping(sessionmaker, order_spec(metric))
    with feed_server() as feed:
        feed.state.orders = [order(n, f"2026-01-0{n}T10:00:00Z", tag) for n in range(1, 6)]
        schedule = await _schedule(sessionmaker, run_settings, mapping.id, f"{feed.url}/orders.json")

        first = await _tick(sessionmaker, run_settings, run_worker_burst, schedule.id)
        assert first.outcome == "queued_run", first.message
        assert (first.pages, first.records_fetched, first.records_new) == (3, 5, 5)
        assert _order_ids(_events(simulator_url, metric)) == [f"{tag}-{n}" for n in range(1, 6)]

        # Between ticks: two new orders, one of them at the very mark the last tick reached, and a
        # feed that answers >= so the newest old order comes back too.
        feed.state.orders += [order(6, "2026-01-05T10:00:00Z", tag), order(7, "2026-01-07T09:00:00Z", tag)]
        feed.state.requests.clear()
        second = await _tick(sessionmaker, run_settings, run_worker_burst, schedule.id)
        assert feed.state.requests[0]["query"]["updated_since"] == "2026-01-05T10:00:00Z"
        assert (second.records_fetched, second.records_new) == (3, 2)
        async with sessionmaker() as db:
            run = await db.get(SyncRun, second.run_id)
            upload = await db.get(Upload, run.upload_id)
        assert run.source == RunSource.FEED and run.status == RunStatus.COMPLETED
        assert (run.total_rows, run.rows_ok, run.items_sent) == (2, 2, 2)
        assert upload.stored_as.endswith(".ndjson") and upload.row_count == 2
        events = _events(simulator_url, metric)
        assert _order_ids(events) == [f"{tag}-{n}" for n in range(1, 8)]  # each order once

        third = await _tick(sessionmaker, run_settings, run_worker_burst, schedule.id)
        assert third.outcome == "nothing_new" and third.run_id is None
        assert "none new" in third.message

        # An order changed at the source (a later updated_at) is new again: it goes out, and Klaviyo
        # keeps one event per order id all the same.
        feed.state.orders[6] = order(7, "2026-01-08T09:00:00Z", tag, total="30.00")
        fourth = await _tick(sessionmaker, run_settings, run_worker_burst, schedule.id)
        assert fourth.records_new == 1
        assert len(_events(simulator_url, metric)) == 7
        async with sessionmaker() as db:
            saved = await db.get(Schedule, schedule.id)
        assert saved.cursor_value == "2026-01-08T09:00:00Z" and saved.last_outcome == "queued_run"


async def test_a_failing_feed_shows_its_error_and_the_next_tick_catches_up(
    run_settings,  # noqa: F811
    sessionmaker,
    run_worker_burst,
    simulator_url,
):
    from tests.support.webhooks import Hook

    tag, metric = uuid.uuid4().hex[:6], f"Feed Order {uuid.uuid4().hex[:6]}"
    mapping = await make_mapping(sessionmaker, order_spec(metric))
    hook = Hook()
    async with sessionmaker() as db:
        await notifications.save(db, url=hook.url, enabled=True, threshold=100.0, user=None)
        await db.commit()

    def tick_calls() -> list[dict]:
        return [body for body in hook.received if body.get("event") == "schedule.tick_failed"]

    try:
        await _failing_feed_heals(
            sessionmaker, run_settings, run_worker_burst, simulator_url, tag, metric, mapping
        )
        # The webhook heard of the failure once, with the feed's error, and not of the tick that healed.
        (call,) = tick_calls()
        assert (
            call["schedule_id"]
            and "HTTP 503 on page 1" in call["message"]
            and "s3cret" not in call["message"]
        )
        assert call["url"] == f"/schedules/{call['schedule_id']}"
    finally:
        hook.close()
        async with sessionmaker() as db:
            await notifications.save(db, url="", enabled=False, threshold=5.0, user=None)
            await db.commit()


async def _failing_feed_heals(
    sessionmaker, tick_settings, run_worker_burst, simulator_url, tag, metric, mapping
):
    with feed_server() as feed:
        feed.state.orders = [order(n, f"2026-02-0{n}T10:00:00Z", tag) for n in range(1, 4)]
        feed.state.token = "s3cret-feed-token"
        schedule = await _schedule(
            sessionmaker,
            tick_settings,
            mapping.id,
            f"{feed.url}/orders.json",
            auth_header_name="Authorization",
            auth_header_value="Bearer s3cret-feed-token",
        )
        feed.state.fail_next = 1
        failed = await _tick(sessionmaker, tick_settings, run_worker_burst, schedule.id)
        assert failed.outcome == "failed" and failed.run_id is None
        assert "HTTP 503 on page 1" in failed.message
        assert "feed backend is down" not in failed.message  # the status line only, never the body
        async with sessionmaker() as db:
            saved = await db.get(Schedule, schedule.id)
        assert saved.last_outcome == "failed" and "HTTP 503" in saved.last_message
        assert saved.cursor_value is None and saved.tick_owner is None  # nothing advanced, nothing held
        assert "s3cret" not in (saved.last_message or "")
        assert _events(simulator_url, metric) == []

        healed = await _tick(sessionmaker, tick_settings, run_worker_burst, schedule.id)
        assert healed.outcome == "queued_run" and healed.records_new == 3
        assert feed.state.requests[-1]["auth"] == "Bearer s3cret-feed-token"
        assert _order_ids(_events(simulator_url, metric)) == [f"{tag}-{n}" for n in range(1, 4)]


async def test_a_tick_while_the_last_run_is_still_going_is_skipped_and_recorded(
    run_settings,  # noqa: F811
    sessionmaker,
):
    tag, metric = uuid.uuid4().hex[:6], f"Feed Order {uuid.uuid4().hex[:6]}"
    mapping = await make_mapping(sessionmaker, order_spec(metric))
    async with httpx.AsyncClient() as http:
        arq = ArqRedis.from_url(run_settings.redis_url)
        # Ticks run directly (no worker), so the first tick's run stays queued: still going.
        ctx = schedules.TickContext(
            sessionmaker, run_settings.model_copy(update={"queue_name": f"arq:idle:{tag}"}), http, arq, "t"
        )
        try:
            with feed_server() as feed:
                feed.state.orders = [order(1, "2026-03-01T10:00:00Z", tag)]
                schedule = await _schedule(sessionmaker, run_settings, mapping.id, f"{feed.url}/orders.json")
                first = await schedules.run_tick(ctx, schedule.id)
                feed.state.orders.append(order(2, "2026-03-02T10:00:00Z", tag))
                second = await schedules.run_tick(ctx, schedule.id)
        finally:
            await arq.delete(f"arq:idle:{tag}")
            await arq.aclose()
    assert first["outcome"] == "queued_run" and second["outcome"] == "skipped"
    async with sessionmaker() as db:
        ticks = (await db.exec(select(ScheduleTick).where(ScheduleTick.schedule_id == schedule.id))).all()
        saved = await db.get(Schedule, schedule.id)
    skipped = [t for t in ticks if t.outcome == "skipped"]
    assert len(skipped) == 1 and f"Run #{first['run']}" in skipped[0].message
    assert saved.last_outcome == "skipped" and saved.cursor_value == "2026-03-01T10:00:00Z"


async def test_a_tick_missed_while_no_worker_ran_runs_once_and_two_workers_claim_it_once(
    run_settings,  # noqa: F811
    sessionmaker,
    redis_client,
):
    mapping = await make_mapping(sessionmaker, order_spec(f"Feed {uuid.uuid4().hex[:6]}"))
    schedule = await _schedule(sessionmaker, run_settings, mapping.id, "http://127.0.0.1:9/orders.json")
    async with sessionmaker() as db:
        saved = await db.get(Schedule, schedule.id)
        saved.next_run_at = utcnow() - timedelta(hours=3)  # three hourly ticks missed
        db.add(saved)
        await db.commit()
    queue = f"arq:cron:{uuid.uuid4().hex[:6]}"
    pool = ArqRedis.from_url(run_settings.redis_url)
    settings = run_settings.model_copy(update={"queue_name": queue})
    try:
        # Two workers starting at once both run the schedules cron at startup.
        ctxs = [{"settings": settings, "sessionmaker": sessionmaker, "redis": pool} for _ in range(2)]
        answers = await asyncio.gather(*(schedule_ticks(ctx) for ctx in ctxs))
        mine = [a for a in answers if schedule.id in a["queued"]]
        assert len(mine) == 1
        jobs = [j.decode() for j in await pool.zrange(queue, 0, -1)]
        assert [j for j in jobs if f":schedule:{schedule.id}:" in j] == [
            f"{queue}:schedule:{schedule.id}:cron:1"
        ]
        async with sessionmaker() as db:
            saved = await db.get(Schedule, schedule.id)
        # The next tick is an interval from now, not the next of the missed ones.
        assert timedelta(minutes=59) < saved.next_run_at - utcnow() <= timedelta(minutes=60)
    finally:
        for job_id in await pool.zrange(queue, 0, -1):
            await pool.delete(f"arq:job:{job_id.decode()}")
        await pool.delete(queue)
        await pool.aclose()


async def test_a_run_that_failed_for_klaviyo_is_resumed_on_the_next_tick(
    settings, sessionmaker, tmp_path, run_worker_burst
):
    tag, metric = uuid.uuid4().hex[:6], f"Feed Order {uuid.uuid4().hex[:6]}"
    mapping = await make_mapping(sessionmaker, order_spec(metric))
    with SimulatorProcess(time_scale=20) as sim, feed_server() as feed:
        run_settings = settings.model_copy(
            update={"sandbox_url": sim.base_url, "klaviyo_time_scale": 20.0, "upload_dir": tmp_path}
        )
        from services.accounts import get_account

        async with sessionmaker() as db:
            account = await get_account(db)
            account.sandbox = True
            db.add(account)
            await db.commit()
        feed.state.orders = [order(n, f"2026-04-0{n}T10:00:00Z", tag) for n in range(1, 4)]
        schedule = await _schedule(sessionmaker, run_settings, mapping.id, f"{feed.url}/orders.json")
        with sim.admin() as admin:
            admin.post("/keys", json={"revoke": [SANDBOX_KEY]}).raise_for_status()
        first = await _tick(sessionmaker, run_settings, run_worker_burst, schedule.id)
        async with sessionmaker() as db:
            run = await db.get(SyncRun, first.run_id)
            saved = await db.get(Schedule, schedule.id)
            pending = await schedules.pending_retries(db, saved)
        assert run.status == RunStatus.FAILED and "refused the key" in run.error_message
        assert [(p.run.id, p.attempts, p.given_up) for p in pending] == [(run.id, 0, False)]

        with sim.admin() as admin:
            admin.post("/keys", json={"add": [{"key": SANDBOX_KEY}]}).raise_for_status()
        second = await _tick(sessionmaker, run_settings, run_worker_burst, schedule.id)
        assert second.retried_runs == [run.id] and second.outcome == "nothing_new"
        async with sessionmaker() as db:
            run = await db.get(SyncRun, first.run_id)
            saved = await db.get(Schedule, schedule.id)
            pending = await schedules.pending_retries(db, saved)
        assert run.status == RunStatus.COMPLETED and pending == []
        events = httpx.get(f"{sim.base_url}/__sim/events", params={"metric": metric}).json()["data"]
        assert _order_ids(events) == [f"{tag}-{n}" for n in range(1, 4)]


async def test_the_same_order_from_two_overlapping_feeds_reaches_klaviyo_once(
    run_settings,  # noqa: F811
    sessionmaker,
    run_worker_burst,
    simulator_url,
):
    tag, metric = uuid.uuid4().hex[:6], f"Feed Order {uuid.uuid4().hex[:6]}"
    mapping = await make_mapping(sessionmaker, order_spec(metric))
    with feed_server() as feed:
        feed.state.orders = [order(n, f"2026-05-0{n}T10:00:00Z", tag) for n in range(1, 5)]
        by_json = await _schedule(sessionmaker, run_settings, mapping.id, f"{feed.url}/orders.json")
        # The same orders as a CSV export, read whole every tick.
        by_csv = await _schedule(
            sessionmaker,
            run_settings,
            mapping.id,
            f"{feed.url}/orders.csv",
            format="csv",
            records_path="",
            cursor_kind="none",
            next_page_path="",
        )
        for schedule in (by_json, by_csv, by_json, by_csv):
            await _tick(sessionmaker, run_settings, run_worker_burst, schedule.id)
    assert _order_ids(_events(simulator_url, metric)) == [f"{tag}-{n}" for n in range(1, 5)]
    async with sessionmaker() as db:
        feed_runs = (
            await db.exec(
                select(SyncRun).where(
                    col(SyncRun.id).in_(
                        select(ScheduleTick.run_id).where(
                            col(ScheduleTick.schedule_id).in_([by_json.id, by_csv.id])
                        )
                    )
                )
            )
        ).all()
    assert sorted(r.total_rows for r in feed_runs) == [4, 4]  # the second round found nothing new


async def test_an_xml_catalog_feed_creates_catalog_items(
    run_settings,  # noqa: F811
    sessionmaker,
    run_worker_burst,
    simulator_url,
):
    tag = uuid.uuid4().hex[:8]
    mapping = await make_mapping(sessionmaker, item_spec(f"catalog feed {tag}"))
    with feed_server() as feed:
        feed.state.products = [
            {
                "sku": f"{tag}-A",
                "name": "Mug",
                "about": "A mug",
                "link": "https://shop.test/a",
                "price": "9.5",
            },
            {"sku": f"{tag}-B", "name": "Cup", "about": "A cup", "link": "https://shop.test/b", "price": "7"},
        ]
        schedule = await _schedule(
            sessionmaker,
            run_settings,
            mapping.id,
            f"{feed.url}/catalog.xml",
            format="xml",
            records_path="product",
            cursor_kind="none",
            key_field="sku",
            next_page_path="",
        )
        tick = await _tick(sessionmaker, run_settings, run_worker_burst, schedule.id)
    assert tick.outcome == "queued_run" and tick.records_new == 2
    async with sessionmaker() as db:
        run = await db.get(SyncRun, tick.run_id)
    assert run.status == RunStatus.COMPLETED, run.error_message
    items = {i["external_id"]: i for i in sim_catalog(simulator_url, tag)["items"]}
    assert set(items) == {f"{tag}-A", f"{tag}-B"}
    assert items[f"{tag}-A"]["price"] == 9.5 and items[f"{tag}-A"]["title"] == "Mug"


async def _backdate_ledger(sessionmaker, schedule_id: int, days: int) -> None:
    async with sessionmaker() as db:
        await db.exec(
            update(FeedRecordSeen)
            .where(col(FeedRecordSeen.schedule_id) == schedule_id)
            .values(seen_at=utcnow() - timedelta(days=days))
        )
        await db.commit()


async def _ledger(sessionmaker, schedule_id: int) -> list[FeedRecordSeen]:
    async with sessionmaker() as db:
        return list(
            (await db.exec(select(FeedRecordSeen).where(FeedRecordSeen.schedule_id == schedule_id))).all()
        )


async def test_ledger_entries_not_seen_for_a_while_are_pruned_and_an_edit_can_start_over(
    run_settings,  # noqa: F811
    sessionmaker,
    run_worker_burst,
    simulator_url,
):
    tag, metric = uuid.uuid4().hex[:6], f"Feed Order {uuid.uuid4().hex[:6]}"
    mapping = await make_mapping(sessionmaker, order_spec(metric))
    with feed_server() as feed:
        feed.state.orders = [order(n, f"2026-04-0{n}T10:00:00Z", tag) for n in range(1, 5)]
        schedule = await _schedule(
            sessionmaker, run_settings, mapping.id, f"{feed.url}/orders.json", cursor_kind="none"
        )
        first = await _tick(sessionmaker, run_settings, run_worker_burst, schedule.id)
        assert first.records_new == 4 and len(await _ledger(sessionmaker, schedule.id)) == 4

        # Orders 1 and 2 leave the feed; a month on, their entries go, 3 and 4 are stamped as seen.
        feed.state.orders = feed.state.orders[2:]
        await _backdate_ledger(sessionmaker, schedule.id, schedules.LEDGER_KEEP.days + 1)
        second = await _tick(sessionmaker, run_settings, run_worker_burst, schedule.id)
        assert second.outcome == "nothing_new", second.message
        assert "2 records not in the feed for 30 days forgotten" in second.message
        ledger = await _ledger(sessionmaker, schedule.id)
        assert len(ledger) == 2 and all(utcnow() - aware(e.seen_at) < timedelta(minutes=5) for e in ledger)

        # A feed that is down prunes nothing: absence from a failed fetch proves nothing.
        await _backdate_ledger(sessionmaker, schedule.id, 90)
        feed.state.fail_next = 1
        failed = await _tick(sessionmaker, run_settings, run_worker_burst, schedule.id)
        assert failed.outcome == "failed" and len(await _ledger(sessionmaker, schedule.id)) == 2

        # Edit with "start over": the ledger is forgotten, the next tick takes every record again.
        async with sessionmaker() as db:
            saved = await db.get(Schedule, schedule.id)
            source = await db.get(FeedSource, saved.source_id)
            values = {**schedules.form_values(saved, source), "position": "restart"}
            edit = await schedules.update_schedule(
                db, run_settings, saved, source, schedules.ScheduleForm.from_form(values)
            )
            await db.commit()
        assert edit.position == "restarted" and "2 records already taken are forgotten" in edit.message
        again = await _tick(sessionmaker, run_settings, run_worker_burst, schedule.id)
        assert again.outcome == "queued_run" and again.records_new == 2
    # Klaviyo keeps one event per order all the same (unique_id).
    assert _order_ids(_events(simulator_url, metric)) == [f"{tag}-{n}" for n in range(1, 5)]


async def test_a_worker_without_an_allow_list_fetches_nothing_internal_nor_posts_the_webhook_there(
    run_settings,  # noqa: F811
    sessionmaker,
    run_worker_burst,
):
    """A schedule saved while loopback was allowed (or before the guard existed), its URL in decimal
    form: the worker without OUTBOUND_ALLOW refuses at connection time, and the failure webhook to a
    loopback receiver is refused too."""
    from tests.workers.test_sync_status import Hook

    tag = uuid.uuid4().hex[:6]
    mapping = await make_mapping(sessionmaker, order_spec(f"Feed Order {tag}"))
    hook = Hook()
    async with sessionmaker() as db:
        await notifications.save(db, url=hook.url, enabled=True, threshold=100.0, user=None)
        await db.commit()
    closed = run_settings.model_copy(update={"outbound_allow": ""})
    try:
        with feed_server() as feed:
            feed.state.orders = [order(1, "2026-04-01T10:00:00Z", tag)]
            port = feed.url.rsplit(":", 1)[1]
            url = f"http://2130706433:{port}/orders.json"
            schedule = await _schedule(sessionmaker, run_settings, mapping.id, url)
            tick = await _tick(sessionmaker, closed, run_worker_burst, schedule.id)
            assert feed.state.requests == []
    finally:
        hook.close()
        async with sessionmaker() as db:
            await notifications.save(db, url="", enabled=False, threshold=5.0, user=None)
            await db.commit()
    assert tick.outcome == "failed" and tick.run_id is None
    assert "2130706433 is a loopback address" in tick.message and "OUTBOUND_ALLOW" in tick.message
    assert hook.received == []


async def test_a_feed_that_lacks_what_the_mapping_needs_is_refused_not_sent(
    run_settings,  # noqa: F811
    sessionmaker,
    run_worker_burst,
    simulator_url,
):
    """No created_at and no line items in the records: the tick fails naming them; nothing is sent."""
    tag, metric = uuid.uuid4().hex[:6], f"Feed Placed {uuid.uuid4().hex[:6]}"
    spec = Spec(
        name=f"feed orders {tag}",
        target=Target(kind=TargetKind.ORDER),
        options=MappingOptions(order_metric=metric, line_metric=None, line_items_path="line_items"),
        fields=[
            column("email", "email", Email()),
            column("created_at", "time", DateParse()),
            column("order_id", "properties.OrderId"),
            column("total", "value", NumberCast()),
            FieldRule(source=PathSource(path="line.sku"), target="item.SKU"),
        ],
    )
    mapping = await make_mapping(sessionmaker, spec)
    with feed_server() as feed:
        feed.state.orders = [order(n, f"2026-01-0{n}T10:00:00Z", tag) for n in range(1, 4)]
        schedule = await _schedule(sessionmaker, run_settings, mapping.id, f"{feed.url}/orders.json")
        tick = await _tick(sessionmaker, run_settings, run_worker_burst, schedule.id)
    assert tick.outcome == "failed", tick.message
    assert tick.run_id is None
    assert "time" in tick.message and "created_at" in tick.message
    assert "line_items" in tick.message
    assert _events(simulator_url, metric) == []
    async with sessionmaker() as db:
        stored = await db.get(Schedule, schedule.id)
        assert stored.cursor_value is None  # nothing taken: the next tick reads the same records
        seen = (await db.exec(select(FeedRecordSeen).where(FeedRecordSeen.schedule_id == schedule.id))).all()
        assert seen == []


async def test_schedule_page_labels_ticks_by_their_runs_and_feed_files_stay_off_uploads(
    run_settings,  # noqa: F811
    sessionmaker,
    run_worker_burst,
    simulator_url,
):
    """A finished tick reads "sent", not "queued run"; an interval tick is not called "cron"; tick
    files are off the Uploads list unless asked for; the run names the schedule that started it."""
    from litestar.testing import AsyncTestClient

    from models import Role
    from tests.support.web import login, make_user
    from web.app import create_app

    tag, metric = uuid.uuid4().hex[:6], f"Feed Polish {uuid.uuid4().hex[:6]}"
    mapping = await make_mapping(sessionmaker, order_spec(metric))
    with feed_server() as feed:
        feed.state.orders = [order(n, f"2026-01-0{n}T10:00:00Z", tag) for n in range(1, 3)]
        schedule = await _schedule(sessionmaker, run_settings, mapping.id, f"{feed.url}/orders.json")
        tick = await _tick(sessionmaker, run_settings, run_worker_burst, schedule.id)
    assert tick.outcome == "queued_run", tick.message
    async with sessionmaker() as db:
        db.add(
            ScheduleTick(schedule_id=schedule.id, trigger="cron", outcome="nothing_new", message="none new")
        )
        await db.commit()
        run = await db.get(SyncRun, tick.run_id)
        upload = await db.get(Upload, run.upload_id)
    async with AsyncTestClient(create_app(run_settings)) as client:
        user = await make_user(sessionmaker, f"op-{tag}", Role.OPERATOR)
        assert (await login(client, user.username)).status_code == 302
        page = (await client.get(f"/schedules/{schedule.id}")).text
        outcomes = re.findall(r'data-testid="tick-outcome">([^<]*)<', page)
        triggers = re.findall(r'data-testid="tick-trigger">([^<]*)<', page)
        assert outcomes == ["nothing new", "sent"] and "queued run" not in page
        assert triggers == ["every 60 min", "run now"] and ">cron<" not in page
        listed = (await client.get("/uploads/")).text
        assert f'href="/uploads/{upload.id}"' not in listed
        assert f'href="/uploads/{upload.id}"' in (await client.get("/uploads/?feeds=true")).text
        run_page = (await client.get(f"/runs/{run.id}")).text
        started = run_page.split('data-testid="run-started-by"', 1)[1].split("</span>", 1)[0]
        assert f'schedule <a href="/schedules/{schedule.id}">' in started and f"tick #{tick.id}" in started
