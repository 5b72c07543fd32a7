"""Proof of landing end to end: a run is sent to a simulator of its own, then checked against what
that simulator holds (Query Metric Aggregates for events; a sample read back for profiles).
Real PostgreSQL, Redis, in-process arq worker, web app and simulator process."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from sqlmodel import select

from klaviyo.client import KlaviyoClient
from models import Role, RunStatus, SyncBatch, SyncRun
from services import notifications, runs
from services.accounts import get_account
from simulator.config import SANDBOX_KEY
from simulator.server import SimulatorProcess
from sync.mapping import Email, MappingOptions, Phone, Target, TargetKind, column
from sync.mapping import Mapping as Spec
from tests.support.runs import csv_text, make_mapping, make_upload, ordered_product_spec, start_run
from tests.support.web import post_form
from tests.workers.test_catalog_runs import item_spec
from tests.workers.test_sync_status import Hook


@pytest.fixture
def sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess(time_scale=20, extra_args=["--check-answers"]) as process:
        yield process
        problems = httpx.get(f"{process.base_url}/__sim/conformance", timeout=10).json()["problems"]
        assert problems == []


@pytest.fixture
async def account_zone(sessionmaker) -> Any:
    """Sets the account's time zone (and the sandbox) for one test; puts both back after."""
    async with sessionmaker() as db:
        account = await get_account(db)
        before = (account.timezone, account.sandbox)
        await db.commit()

    async def set_zone(name: str | None) -> None:
        async with sessionmaker() as db:
            account = await get_account(db)
            account.timezone, account.sandbox = name, True
            db.add(account)
            await db.commit()

    yield set_zone
    async with sessionmaker() as db:
        account = await get_account(db)
        account.timezone, account.sandbox = before
        db.add(account)
        await db.commit()


def _settings(settings, sim, tmp_path, **overrides: Any):
    return settings.model_copy(
        update={
            "sandbox_url": sim.base_url,
            "klaviyo_time_scale": 20.0,
            "upload_dir": tmp_path,
            "run_lease_seconds": 5.0,
            # The automatic check runs at once in these tests, and a shortfall is final at once.
            "verify_auto": True,
            "verify_delay_seconds": 0.0,
            "verify_settle_seconds": 0.0,
            **overrides,
        }
    )


def _row(n: int, day_time: str, price: str = "2", email: str | None = None) -> dict[str, str]:
    return {
        "email": email or f"v{n}-{uuid.uuid4().hex[:6]}@shop.test",
        "order": f"O{n}-{uuid.uuid4().hex[:6]}",
        "sku": "S",
        "price": price,
        "time": day_time,
    }


async def _event_run(sessionmaker, settings, tmp_path, rows, run_worker_burst, metric: str) -> SyncRun:
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows))
    mapping = await make_mapping(sessionmaker, ordered_product_spec(metric))
    run = await start_run(sessionmaker, settings, upload, mapping)
    await run_worker_burst(settings)
    async with sessionmaker() as db:
        done = await db.get(SyncRun, run.id)
        assert done is not None
        return done


def _days(run: SyncRun) -> list[tuple[str, int, int, bool]]:
    return [(d["day"], d["sent"], d["held"], d["short"]) for d in run.verification["days"]]


async def test_a_backfill_is_verified_day_by_day_in_the_account_time_zone(
    settings, sessionmaker, tmp_path, sim, run_worker_burst, account_zone, client, as_role
):
    await account_zone("America/New_York")
    sim.configure(events_visible_seconds=0)
    metric = f"Verified {uuid.uuid4().hex[:6]}"
    rows = [
        *[_row(n, "2025-03-01T15:00:00Z") for n in range(3)],
        # 02:00 UTC on the 3rd is still the 2nd in New York.
        *[_row(n, "2025-03-03T02:00:00Z", price="5") for n in range(3, 5)],
        # Accepted but never kept by Klaviyo: not counted as sent-and-kept.
        _row(5, "2025-03-01T15:00:00Z", email=f"x-{uuid.uuid4().hex[:6]}@example.com"),
        {**_row(6, "2025-03-01T15:00:00Z"), "email": "not-an-email"},  # fails: never sent
    ]
    test_settings = _settings(settings, sim, tmp_path)
    run = await _event_run(sessionmaker, test_settings, tmp_path, rows, run_worker_burst, metric)
    assert run.status == RunStatus.COMPLETED, run.error_message
    assert run.items_sent == 6

    ver = run.verification
    assert ver["state"] == "verified", ver
    assert ver["timezone"] == "America/New_York"
    assert _days(run) == [("2025-03-01", 3, 3, False), ("2025-03-02", 2, 2, False)]
    assert [(d["sent_value"], d["held_value"]) for d in ver["days"]] == [(6.0, 6.0), (10.0, 10.0)]
    # The tally lives with the batch that carried the events.
    async with sessionmaker() as db:
        tallies = (await db.exec(select(SyncBatch.tally).where(SyncBatch.run_id == run.id))).all()
    assert tallies == [
        {"tz": "America/New_York", "days": {metric: {"2025-03-01": [3, 6.0], "2025-03-02": [2, 10.0]}}}
    ]
    # Only the aggregates endpoint was asked, twice at most per metric (one query for the range).
    stats = httpx.get(f"{sim.base_url}/__sim/stats").json()
    assert sum(stats["requests"]["POST /api/metric-aggregates"].values()) == 1

    await as_role(Role.VIEWER)
    page = (await client.get(f"/runs/{run.id}")).text
    assert 'data-testid="verification-state">verified' in page
    assert "In Klaviyo (at least)" in page
    assert "days in America/New_York" in page
    listing = (await client.get("/runs/")).text
    assert 'data-testid="run-verified"' in listing


async def test_events_dropped_inside_klaviyo_show_as_a_shortfall_on_their_days(
    settings, sessionmaker, tmp_path, sim, run_worker_burst, account_zone
):
    await account_zone("UTC")
    sim.configure(
        events_visible_seconds=0, faults={"drop_events_share": 1.0, "drop_events_days": ["2025-04-02"]}
    )
    hook = Hook()
    async with sessionmaker() as db:
        await notifications.save(db, url=hook.url, enabled=True, threshold=50.0, user=None)
        await db.commit()
    try:
        metric = f"Dropped {uuid.uuid4().hex[:6]}"
        rows = [
            *[_row(n, "2025-04-01T10:00:00Z") for n in range(4)],
            *[_row(n, "2025-04-02T10:00:00Z", price="3") for n in range(4, 7)],
            *[_row(n, "2025-04-03T10:00:00Z") for n in range(7, 9)],
        ]
        test_settings = _settings(settings, sim, tmp_path)
        run = await _event_run(sessionmaker, test_settings, tmp_path, rows, run_worker_burst, metric)
    finally:
        async with sessionmaker() as db:
            await notifications.save(db, url="", enabled=False, threshold=5.0, user=None)
            await db.commit()
        hook.close()
    assert run.status == RunStatus.COMPLETED and run.items_sent == 9
    ver = run.verification
    assert ver["state"] == "mismatch", ver
    assert _days(run) == [
        ("2025-04-01", 4, 4, False),
        ("2025-04-02", 3, 0, True),
        ("2025-04-03", 2, 2, False),
    ]
    assert ver["days"][1]["difference"] == -3 and ver["days"][1]["value_difference"] == -9.0
    assert "3 fewer events" in ver["message"] and "on 1 day" in ver["message"]
    # The run's webhook hears about it, with the short day.
    mine = [body for body in hook.received if body.get("run_id") == run.id]
    assert [b["event"] for b in mine] == ["run.verification_mismatch"]
    assert mine[0]["verification"]["short_days"] == [
        {"metric": metric, "day": "2025-04-02", "difference": -3}
    ]


async def test_a_check_before_klaviyo_has_processed_the_jobs_says_not_yet_complete(
    settings, sessionmaker, tmp_path, sim, run_worker_burst, account_zone, client, as_role
):
    await account_zone("UTC")
    sim.configure(events_visible_seconds=36_000)  # Klaviyo is slow to process these jobs
    metric = f"Slow {uuid.uuid4().hex[:6]}"
    rows = [_row(n, "2025-05-01T10:00:00Z") for n in range(3)]
    # Klaviyo has 15 minutes to catch up before a shortfall counts as a mismatch.
    test_settings = _settings(settings, sim, tmp_path, verify_settle_seconds=900.0 * 20)
    run = await _event_run(sessionmaker, test_settings, tmp_path, rows, run_worker_burst, metric)
    ver = run.verification
    assert ver["state"] == "pending", ver
    assert ver["message"].startswith("Not yet complete: Klaviyo holds 3 fewer events")
    assert _days(run) == [("2025-05-01", 3, 0, True)]

    await as_role(Role.VIEWER)
    page = (await client.get(f"/runs/{run.id}")).text
    assert "not yet complete" in page and "mismatch" not in page
    assert "may need some minutes" in page

    # Klaviyo catches up; the operator re-checks with one click.
    sim.configure(events_visible_seconds=0)
    await as_role(Role.OPERATOR)
    answer = await post_form(client, f"/runs/{run.id}/verify")
    assert answer.status_code == 200, answer.text
    assert 'data-testid="verification-checking"' in answer.text
    await run_worker_burst(test_settings)
    async with sessionmaker() as db:
        again = await db.get(SyncRun, run.id)
    assert again.verification["state"] == "verified"
    assert _days(again) == [("2025-05-01", 3, 3, False)]


def _profile_spec(name: str) -> Spec:
    return Spec(
        name=name,
        target=Target(kind=TargetKind.PROFILE),
        fields=[
            column("email", "email"),
            column("first", "first_name"),
            column("city", "location.city"),
            column("tier", "properties.Tier"),
        ],
    )


async def test_a_profile_changed_in_klaviyo_after_the_run_shows_in_the_sample(
    settings, sessionmaker, tmp_path, sim, run_worker_burst, account_zone, client, as_role
):
    await account_zone("UTC")
    tag = uuid.uuid4().hex[:6]
    rows = [
        {"email": f"p{n}-{tag}@shop.test", "first": f"Ann{n}", "city": "Oslo", "tier": "gold"}
        for n in range(5)
    ]
    # Two rows of one person: the later overwrites the earlier, so neither is sampled.
    twice = f"twice-{tag}@shop.test"
    rows += [{"email": twice, "first": "Bo", "city": "Oslo", "tier": "gold"}, {**rows[0], "email": twice}]
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "profiles.csv")
    mapping = await make_mapping(sessionmaker, _profile_spec(f"verify profiles {tag}"))
    test_settings = _settings(settings, sim, tmp_path)
    run = await start_run(sessionmaker, settings, upload, mapping)
    await run_worker_burst(test_settings)
    async with sessionmaker() as db:
        done = await db.get(SyncRun, run.id)
    assert done.status == RunStatus.COMPLETED and done.items_sent == 7, done.error_message
    # The automatic check right after the run: every sampled profile as sent.
    assert done.verification["state"] == "verified", done.verification
    assert done.verification["sample"]["headline"] == "5 of 5 match."

    # Someone edits one profile in Klaviyo after the run.
    async with KlaviyoClient(SANDBOX_KEY, base_url=sim.base_url) as klaviyo:
        ids = await klaviyo.find_profile_ids("email", [f"p3-{tag}@shop.test"])
        await klaviyo.update_profile(ids[f"p3-{tag}@shop.test"], {"first_name": "Changed"})

    await as_role(Role.OPERATOR)
    assert (await post_form(client, f"/runs/{run.id}/verify")).status_code == 200
    await run_worker_burst(test_settings)
    async with sessionmaker() as db:
        checked = await db.get(SyncRun, run.id)
    sample = checked.verification["sample"]
    assert checked.verification["state"] == "mismatch"
    assert sample["headline"] == "4 of 5 match; 1 differ."
    assert sample["differences"] == [
        {"row": 4, "record": f"p3-{tag}@shop.test", "field": "first_name", "sent": "Ann3", "held": "Changed"}
    ]
    page = (await client.get(f"/runs/{run.id}")).text
    assert "4 of 5 match; 1 differ." in page and "Changed" in page


async def test_runs_that_cannot_be_checked_say_why(settings, sessionmaker, tmp_path, client, as_role):
    metric = f"Dry {uuid.uuid4().hex[:6]}"
    upload = await make_upload(sessionmaker, tmp_path, csv_text([_row(1, "2025-01-01T00:00:00Z")]))
    mapping = await make_mapping(sessionmaker, ordered_product_spec(metric))
    run = await start_run(sessionmaker, settings, upload, mapping, dry_run=True)
    async with sessionmaker() as db:
        stored = await db.get(SyncRun, run.id)
        stored.status = RunStatus.COMPLETED
        db.add(stored)
        await db.commit()
    await as_role(Role.OPERATOR)
    answer = await post_form(client, f"/runs/{run.id}/verify")
    assert answer.status_code == 409
    assert "A dry run sent nothing to Klaviyo." in answer.text
    async with sessionmaker() as db:
        row = await db.get(SyncRun, run.id)
    assert row.verification is None


async def _kind_run(sessionmaker, settings, tmp_path, run_worker_burst, rows, spec, **options) -> SyncRun:
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows))
    mapping = await make_mapping(sessionmaker, spec)
    async with sessionmaker() as db:
        run = await runs.create_run(
            db, upload_id=upload.id, mapping_id=mapping.id, dry_run=False, backfill=True, user=None, **options
        )
        await db.commit()
    arq = ArqRedis.from_url(settings.redis_url)
    await runs.enqueue(arq, settings.queue_name, run, "start")
    await arq.aclose()
    await run_worker_burst(settings)
    async with sessionmaker() as db:
        done = await db.get(SyncRun, run.id)
    assert done is not None and done.status == RunStatus.COMPLETED, done and done.error_message
    return done


async def _check_again(sessionmaker, client, run_worker_burst, settings, run_id: int) -> dict[str, Any]:
    assert (await post_form(client, f"/runs/{run_id}/verify")).status_code == 200
    await run_worker_burst(settings)
    async with sessionmaker() as db:
        checked = await db.get(SyncRun, run_id)
    assert checked is not None
    return checked.verification


async def test_catalog_items_are_read_back_and_a_changed_price_shows(
    settings, sessionmaker, tmp_path, sim, run_worker_burst, account_zone, client, as_role
):
    await account_zone("UTC")
    tag = uuid.uuid4().hex[:6]
    rows = [
        {"sku": f"{tag}-{n}", "price": f"{10 + n}.00", "name": f"Mug {n}", "about": "Stoneware",
         "link": f"https://shop.test/{tag}/{n}"}
        for n in range(3)
    ]  # fmt: skip
    test_settings = _settings(settings, sim, tmp_path)
    run = await _kind_run(
        sessionmaker, test_settings, tmp_path, run_worker_burst, rows, item_spec(f"cat {tag}")
    )
    assert run.items_sent == 3
    assert run.verification["state"] == "verified", run.verification
    assert run.verification["sample"]["headline"] == "3 of 3 match."
    # An update run names the items by id; its sample is read back the same way.
    prices = [{"sku": r["sku"], "price": f"{20 + n}.50"} for n, r in enumerate(rows)]
    update = item_spec(f"cat update {tag}", mode="update")
    run = await _kind_run(sessionmaker, test_settings, tmp_path, run_worker_burst, prices, update)
    assert run.verification["sample"]["headline"] == "3 of 3 match.", run.verification

    # The price of one item is changed in Klaviyo afterwards.
    async with KlaviyoClient(SANDBOX_KEY, base_url=sim.base_url) as klaviyo:
        item_id = f"$custom:::$default:::{tag}-1"
        await klaviyo.update_catalog_items(
            [{"type": "catalog-item", "id": item_id, "attributes": {"price": 99.0}}]
        )
    httpx.post(f"{sim.base_url}/__sim/jobs/complete").raise_for_status()
    await as_role(Role.OPERATOR)
    ver = await _check_again(sessionmaker, client, run_worker_burst, test_settings, run.id)
    assert ver["state"] == "mismatch"
    assert ver["sample"]["headline"] == "2 of 3 match; 1 differ."
    [difference] = ver["sample"]["differences"]
    assert (difference["row"], difference["record"], difference["field"]) == (2, f"{tag}-1", "price")
    assert difference["held"] == 99.0


async def test_list_runs_check_membership_and_subscriptions_check_consent(
    settings, sessionmaker, tmp_path, sim, run_worker_burst, account_zone, client, as_role
):
    await account_zone("UTC")
    tag = uuid.uuid4().hex[:6]
    test_settings = _settings(settings, sim, tmp_path)
    async with KlaviyoClient(SANDBOX_KEY, base_url=sim.base_url) as klaviyo:
        list_id = await klaviyo.create_list(f"Verify {tag}")
    people = [{"email": f"m{n}-{tag}@shop.test", "phone": ""} for n in range(3)]
    members = Spec(
        name=f"members {tag}",
        target=Target(kind=TargetKind.LIST_MEMBERSHIP),
        fields=[column("email", "email", Email()), column("phone", "phone_number", Phone())],
    )
    added = await _kind_run(
        sessionmaker, test_settings, tmp_path, run_worker_burst, people, members, list_id=list_id
    )
    assert added.verification["sample"]["headline"] == "3 of 3 match.", added.verification

    subscribers = [{"email": f"s{n}-{tag}@shop.test", "phone": ""} for n in range(2)]
    consent = Spec(
        name=f"subscribe {tag}",
        target=Target(kind=TargetKind.SUBSCRIPTION),
        options=MappingOptions(channels=["email"]),
        fields=[column("email", "email", Email()), column("phone", "phone_number", Phone())],
    )
    subscribed = await _kind_run(
        sessionmaker, test_settings, tmp_path, run_worker_burst, subscribers, consent, list_id=list_id
    )
    assert subscribed.verification["sample"]["headline"] == "2 of 2 match.", subscribed.verification

    # Afterwards one member leaves the list and one subscriber unsubscribes, in Klaviyo.
    async with KlaviyoClient(SANDBOX_KEY, base_url=sim.base_url) as klaviyo:
        ids = await klaviyo.find_profile_ids("email", [people[0]["email"]])
        await klaviyo.remove_list_members(list_id, [ids[people[0]["email"]]])
        leaving = {
            "email": subscribers[1]["email"],
            "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}},
        }
        await klaviyo.unsubscribe_profiles([{"type": "profile", "attributes": leaving}])
    await as_role(Role.OPERATOR)
    ver = await _check_again(sessionmaker, client, run_worker_burst, test_settings, added.id)
    assert ver["sample"]["headline"] == "2 of 3 match; 1 differ."
    assert [(d["record"], d["field"], d["sent"], d["held"]) for d in ver["sample"]["differences"]] == [
        (people[0]["email"], "list membership", "member", "not a member")
    ]
    ver = await _check_again(sessionmaker, client, run_worker_burst, test_settings, subscribed.id)
    assert ver["sample"]["headline"] == "1 of 2 match; 1 differ."
    found = [(d["record"], d["field"], d["sent"], d["held"]) for d in ver["sample"]["differences"]]
    assert (subscribers[1]["email"], "email marketing consent", "SUBSCRIBED", "UNSUBSCRIBED") in found


async def test_a_check_no_worker_took_is_offered_again(settings, sessionmaker, tmp_path, client, as_role):
    upload = await make_upload(sessionmaker, tmp_path, csv_text([_row(1, "2025-01-01T00:00:00Z")]))
    mapping = await make_mapping(sessionmaker, ordered_product_spec(f"Stalled {uuid.uuid4().hex[:6]}"))
    run = await start_run(sessionmaker, settings, upload, mapping)
    asked = (datetime.now(UTC) - timedelta(minutes=11)).isoformat()
    async with sessionmaker() as db:
        stored = await db.get(SyncRun, run.id)
        stored.status, stored.items_sent = RunStatus.COMPLETED, 1
        stored.verification = {"state": "checking", "requested_at": asked}
        db.add(stored)
        await db.commit()
    await as_role(Role.OPERATOR)
    page = (await client.get(f"/runs/{run.id}")).text
    assert 'data-testid="verification-stalled"' in page and 'hx-trigger="every 2s"' not in page
    assert 'data-testid="verify-button"' in page
    async with sessionmaker() as db:
        stored = await db.get(SyncRun, run.id)
        stored.verification = {"state": "checking", "requested_at": datetime.now(UTC).isoformat()}
        db.add(stored)
        await db.commit()
    page = (await client.get(f"/runs/{run.id}")).text
    assert 'data-testid="verification-checking"' in page and 'data-testid="verify-button"' not in page


async def test_a_long_backfill_is_asked_a_year_at_a_time_within_the_rate_limit(
    settings, sessionmaker, tmp_path, run_worker_burst, account_zone
):
    await account_zone("UTC")
    metric = f"Years {uuid.uuid4().hex[:6]}"
    rows = [_row(n, f"{2012 + n}-06-15T12:00:00Z", price="1") for n in range(12)]  # twelve years
    # Klaviyo's real limits, not time-scaled: 3 queries a second at most.
    with SimulatorProcess(time_scale=1, extra_args=["--check-answers"]) as real:
        real.configure(events_visible_seconds=0)
        test_settings = _settings(settings, real, tmp_path, klaviyo_time_scale=1.0)
        started = time.monotonic()
        run = await _event_run(sessionmaker, test_settings, tmp_path, rows, run_worker_burst, metric)
        took = time.monotonic() - started
        asked = httpx.get(f"{real.base_url}/__sim/stats").json()["requests"]["POST /api/metric-aggregates"]
    assert run.verification["state"] == "verified", run.verification
    assert len(run.verification["days"]) == 12
    # One query per year of days (Klaviyo answers at most a year each), paced by the shared limiter
    # so none is refused: twelve queries at under 3 a second take seconds.
    assert asked == {"200": 12}
    assert took > 3.0


async def test_a_long_backfill_shows_its_short_days_first(settings, sessionmaker, tmp_path, client, as_role):
    upload = await make_upload(sessionmaker, tmp_path, csv_text([_row(1, "2025-01-01T00:00:00Z")]))
    mapping = await make_mapping(sessionmaker, ordered_product_spec(f"Long {uuid.uuid4().hex[:6]}"))
    run = await start_run(sessionmaker, settings, upload, mapping)
    day = datetime(2024, 1, 1, tzinfo=UTC)
    days = [
        {"metric": "M", "day": (day + timedelta(days=n)).date().isoformat(), "sent": 5, "sent_value": 5.0,
         "held": 2 if n == 40 else 5, "held_value": 5.0, "difference": -3 if n == 40 else 0,
         "value_difference": 0.0, "short": n == 40}
        for n in range(90)
    ]  # fmt: skip
    async with sessionmaker() as db:
        stored = await db.get(SyncRun, run.id)
        stored.status, stored.items_sent = RunStatus.COMPLETED, 450
        stored.verification = {
            "state": "mismatch",
            "message": "m",
            "checked_at": day.isoformat(),
            "days": days,
        }
        db.add(stored)
        await db.commit()
    await as_role(Role.VIEWER)
    page = (await client.get(f"/runs/{run.id}")).text
    short_table = page.split('data-testid="verification-days"')[1].split("</table>")[0]
    assert short_table.count('data-testid="verification-day"') == 1 and 'data-day="2024-02-10"' in short_table
    assert "All 90 days" in page and page.count('data-testid="verification-day"') == 91
    assert 'data-testid="verify-button"' not in page  # a viewer cannot start a check
