"""Sync status pages against known database state: the Overview's numbers, the runs list filters,
the run page's timeline and request samples, /metrics, the audit date filter, notifications.

Each test that checks exact numbers gets a fresh, migrated PostgreSQL database of its own, so what
other tests wrote cannot leak into the totals.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, date, datetime, timedelta

from litestar.testing import AsyncTestClient
from pydantic import SecretStr
from sqlalchemy import text

from models import (
    AuditEvent,
    RequestSample,
    Role,
    RowError,
    RunSource,
    RunStatus,
    SyncBatch,
    SyncRun,
)
from models.base import utcnow
from models.db import make_engine, make_sessionmaker
from services import notifications
from services.accounts import get_account, set_private_key
from services.status import account_key
from tests.support.env import unique
from tests.support.web import login, make_user, post_form
from web.app import create_app

LIVE_KEY = f"pk_live_{uuid.uuid4().hex}"


def _batch(run_id: int, seq: int, sent_at: datetime | None, **values) -> SyncBatch:
    base = dict(
        run_id=run_id,
        seq=seq,
        status="sent",
        first_ordinal=seq * 10,
        last_ordinal=seq * 10 + 9,
        first_row=seq * 10 + 1,
        last_row=seq * 10 + 10,
        item_count=10,
        accepted=10,
        attempts=1,
        http_status=202,
        sent_at=sent_at,
    )
    return SyncBatch(**{**base, **values})


async def _run(maker, **values) -> SyncRun:
    async with maker() as db:
        run = SyncRun(**{"kind": "event", "status": RunStatus.COMPLETED, **values})
        db.add(run)
        await db.commit()
        return run


async def test_overview_numbers_match_the_database(fresh, redis_client):
    client, maker, settings = fresh
    async with maker() as db:
        set_private_key(await get_account(db), settings, LIVE_KEY, None)
        await db.commit()
    run = await _run(maker)
    now = utcnow().replace(second=30, microsecond=0) - timedelta(minutes=5)
    async with maker() as db:
        db.add_all(
            [
                _batch(run.id, 0, now, item_count=500, accepted=500),
                _batch(run.id, 1, now + timedelta(seconds=10), item_count=305, accepted=300, rejected=5),
                _batch(
                    run.id, 2, now - timedelta(hours=3), item_count=234, accepted=234, attempts=3, http_429=2
                ),
                _batch(
                    run.id,
                    3,
                    now - timedelta(hours=1),
                    item_count=50,
                    accepted=0,
                    rejected=50,
                    http_status=400,
                ),
                _batch(run.id, 4, now - timedelta(hours=25), item_count=999, accepted=999),  # outside 24 h
                _batch(run.id, 5, None, status="in_flight", accepted=0),  # not sent yet
            ]
        )
        await db.commit()
    # Seven grants in the limiter's current window for this account's bulk-events class.
    base = f"klaviyo:rl:{{{account_key(LIVE_KEY)}:events_bulk}}"
    seconds, micros = await redis_client.time()
    now_ms = seconds * 1000 + micros / 1000
    await redis_client.zadd(f"{base}:log", {f"g{i}": now_ms - i * 100 for i in range(7)})
    await redis_client.zadd(f"{base}:log", {"old": now_ms - 120_000})  # outside the 60 s window
    try:
        page = await client.get("/")
    finally:
        await redis_client.delete(f"{base}:log")
    assert page.status_code == 200
    html = page.text
    assert 'data-testid="events-24h">1,034<' in html
    assert 'data-testid="requests-24h">6<' in html
    assert 'data-testid="http429-24h">2<' in html
    # 55 of 1,089 items rejected.
    assert 'data-testid="error-rate-24h">5.05%<' in html
    island = re.search(r'<script type="application/json" id="throughput-data">(.*?)</script>', html, re.S)
    chart = json.loads(island.group(1))
    assert chart["ceiling"] == 150_000 and len(chart["x"]) == 1440
    assert [s["label"] for s in chart["series"]] == ["Events/min"]
    points = {x: y for x, y in zip(chart["x"], chart["series"][0]["data"], strict=True) if y}
    assert sum(points.values()) == 1034
    assert points[int(now.timestamp()) // 60 * 60] == 800  # two batches in one minute
    # Headroom: 7 grants used of the limiter's 145 (150 less its 3 % margin).
    row = html.split('data-testid="headroom-events_bulk"', 1)[1].split("</tr>", 1)[0]
    assert re.search(r'class="num">7</td>\s*<td class="num">145 / 60 s</td>\s*<td class="num">150<', row), row

    # The same numbers as the database computes them itself.
    async with maker() as db:
        total = (
            await db.exec(
                text("SELECT sum(accepted) FROM sync_batches WHERE sent_at >= now() - interval '24 hours'")
            )
        ).scalar()
    assert total == 1034

    assert "1,034 events" in html
    # The partials the page polls answer on their own, and see batches sent since (by kind).
    assert 'data-testid="events-24h">1,034<' in (await client.get("/overview/traffic")).text
    profiles = await _run(maker, kind="profile")
    async with maker() as db:
        db.add(_batch(run.id, 6, utcnow(), item_count=66, accepted=66))
        db.add(_batch(profiles.id, 0, utcnow(), item_count=500, accepted=500))
        await db.commit()
    traffic = (await client.get("/overview/traffic")).text
    assert 'data-testid="events-24h">1,600<' in traffic
    assert "1,100 events · 500 profiles" in traffic and "Profiles/min" in traffic
    status = await client.get("/overview/status")
    assert 'id="overview-status"' in status.text and 'hx-trigger="every 5s"' in status.text


async def test_overview_renders_with_nothing_sent(fresh):
    client, _, _ = fresh
    page = await client.get("/")
    assert page.status_code == 200
    assert 'id="throughput-chart"' in page.text and "/static/vendor/uplot.min.js" in page.text
    assert "cdn" not in page.text.lower()


async def test_runs_list_filters_and_keyset_pages(fresh):
    client, maker, _ = fresh
    old = datetime(2026, 1, 10, 12, tzinfo=UTC)
    ids = {}
    ids["a"] = (await _run(maker, created_at=old)).id
    ids["b"] = (await _run(maker, kind="order", created_at=old + timedelta(days=1))).id
    ids["c"] = (await _run(maker, source=RunSource.RETRY, status=RunStatus.FAILED)).id
    ids["d"] = (await _run(maker, kind="order", status=RunStatus.FAILED)).id

    async def shown(query: str) -> list[int]:
        page = await client.get(f"/runs/?{query}")
        assert page.status_code == 200
        return [int(n) for n in re.findall(r'<a href="/runs/(\d+)">#', page.text)]

    assert await shown("") == [ids["d"], ids["c"], ids["b"], ids["a"]]
    assert await shown("kind=order") == [ids["d"], ids["b"]]
    assert await shown("status=failed") == [ids["d"], ids["c"]]
    assert await shown("source=retry") == [ids["c"]]
    assert await shown("since=2026-01-10&until=2026-01-10") == [ids["a"]]
    assert await shown("since=2026-01-10&until=2026-01-11") == [ids["b"], ids["a"]]
    assert await shown(f"until={date.today() - timedelta(days=1)}&kind=order") == [ids["b"]]
    assert "No run matches" in (await client.get("/runs/?source=feed")).text

    # Keyset pages of 50: the "older" link carries the filters along.
    async with maker() as db:
        db.add_all(SyncRun(kind="profile", status=RunStatus.COMPLETED) for _ in range(60))
        await db.commit()
    first = await client.get("/runs/?kind=profile")
    assert len(re.findall(r'<a href="/runs/\d+">#', first.text)) == 50
    more = re.search(r'hx-get="(/runs/\?before=\d+[^"]*)"', first.text).group(1).replace("&amp;", "&")
    assert "kind=profile" in more
    second = await client.get(more, headers={"hx-request": "true"})
    assert len(re.findall(r'<a href="/runs/\d+">#', second.text)) == 10 and "<html" not in second.text


async def test_a_sparse_filter_scans_a_bounded_window_then_offers_to_look_further(fresh, monkeypatch):
    client, maker, _ = fresh
    from services import runs as runs_service

    monkeypatch.setattr(runs_service, "SCAN_WINDOW", 5)
    wanted = (await _run(maker, source=RunSource.FEED)).id
    for _ in range(8):
        await _run(maker)
    page = await client.get("/runs/?source=feed")
    assert 'data-testid="runs-scanned"' in page.text and f'href="/runs/{wanted}"' not in page.text
    further = re.search(r'hx-get="(/runs/\?before=\d+[^"]*)"', page.text).group(1).replace("&amp;", "&")
    older = await client.get(further, headers={"hx-request": "true"})
    assert f'<a href="/runs/{wanted}">#' in older.text and "runs-more" not in older.text


async def test_run_page_timeline_pages_and_errors_by_rule(fresh):
    client, maker, _ = fresh
    run = await _run(maker)
    async with maker() as db:
        db.add_all(
            _batch(run.id, seq, utcnow(), job_id=f"job-{seq}", attempts=1 + seq % 3) for seq in range(45)
        )
        db.add_all(
            RowError(run_id=run.id, row_number=n, stage="klaviyo", rule="invalid_email", message=f"bad {n}")
            for n in range(100, 130)
        )
        db.add(RowError(run_id=run.id, row_number=7, rule="required", column="time", message="missing"))
        await db.commit()
    page = await client.get(f"/runs/{run.id}")
    assert page.status_code == 200
    table = page.text.split('data-testid="batches"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 21  # header + 20 rows
    assert "job-44" in table and "job-25" in table and "job-24" not in table
    groups = page.text.split("Errors by rule", 1)[1].split("</table>", 1)[0]
    assert re.search(r"invalid_email</code></td><td>klaviyo</td><td class=\"num\">30<", groups)
    assert "100, 101, 102, 103, 104" in groups and "bad 100" in groups
    older = await client.get(f"/runs/{run.id}/batches?before=25")
    assert "job-24" in older.text and "job-5" in older.text and "job-4<" not in older.text
    last = await client.get(f"/runs/{run.id}/batches?before=5")
    assert "job-0" in last.text and "Older batches" not in last.text


async def test_run_page_shows_request_samples(fresh):
    client, maker, _ = fresh
    run = await _run(maker)
    async with maker() as db:
        sample = RequestSample(
            run_id=run.id,
            method="POST",
            url="http://127.0.0.1:9/api/event-bulk-create-jobs",
            status=400,
            duration_ms=12,
            request_headers={"authorization": "Klaviyo-API-Key [redacted]"},
            request_body='{"data": "x"}',
            request_bytes=13,
            response_headers={"content-type": "application/vnd.api+json"},
            response_body='{"errors": [{"code": "invalid"}]}',
            response_bytes=33,
        )
        db.add(sample)
        await db.commit()
    page = await client.get(f"/runs/{run.id}")
    listing = page.text.split('data-testid="request-samples"', 1)[1]
    assert "api/event-bulk-create-jobs" in listing and ">400<" in listing
    detail = await client.get(f"/runs/{run.id}/requests/{sample.id}")
    assert "Klaviyo-API-Key [redacted]" in detail.text and "invalid" in detail.text
    assert (await client.get(f"/runs/{run.id + 1}/requests/{sample.id}")).status_code == 404


async def test_metrics_match_the_database_and_honour_the_token(fresh, settings):
    client, maker, test_settings = fresh
    run = await _run(maker, rows_read=40, rows_failed=3, items_sent=37)
    await _run(maker, status=RunStatus.FAILED)
    async with maker() as db:
        db.add(_batch(run.id, 0, utcnow(), attempts=4, http_429=3))
        db.add(_batch(run.id, 1, utcnow(), http_status=400))
        await db.commit()
    body = (await client.get("/metrics")).text
    assert 'kc_runs{status="completed"} 1.0' in body and 'kc_runs{status="failed"} 1.0' in body
    assert "kc_items_sent_total 20.0" in body and "kc_items_rejected_total 0.0" in body
    assert 'kc_batches_by_http_status{status="202"} 1.0' in body
    assert 'kc_batches_by_http_status{status="400"} 1.0' in body
    assert "kc_requests_total 5.0" in body and "kc_http_429_total 3.0" in body
    assert 'kc_limiter_limit{rate_class="events_bulk"} 145.0' in body
    assert "kc_queue_depth" in body and "kc_workers_alive" in body

    # Public by default (no session needed); with METRICS_TOKEN set, a bearer token is required.
    async with AsyncTestClient(create_app(test_settings)) as anonymous:
        assert (await anonymous.get("/metrics")).status_code == 200
    guarded = test_settings.model_copy(update={"metrics_token": SecretStr("s3cret-token")})
    async with AsyncTestClient(create_app(guarded)) as scraper:
        assert (await scraper.get("/metrics")).status_code == 401
        wrong = await scraper.get("/metrics", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await scraper.get("/metrics", headers={"authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200 and "kc_runs" in ok.text


async def test_audit_log_filters_by_date(fresh):
    client, maker, _ = fresh
    async with maker() as db:
        for day in (1, 2, 3):
            db.add(AuditEvent(action=f"test.day{day}", at=datetime(2026, 3, day, 9, tzinfo=UTC)))
        await db.commit()

    async def actions(query: str) -> list[str]:
        page = await client.get(f"/audit/?{query}")
        rows = page.text.split('id="audit-rows"', 1)[1]
        return re.findall(r"<code>(test\.day\d)</code>", rows)

    assert await actions("since=2026-03-02") == ["test.day3", "test.day2"]
    assert await actions("until=2026-03-02") == ["test.day2", "test.day1"]
    assert await actions("since=2026-03-02&until=2026-03-02") == ["test.day2"]
    page = await client.get("/audit/?since=2026-03-02")
    assert 'name="since" value="2026-03-02"' in page.text


async def test_notifications_are_admin_only_and_validated(fresh, sessionmaker):
    client, maker, _ = fresh
    page = await client.get("/notifications/")
    assert page.status_code == 200 and "Webhook URL" in page.text
    bad = await post_form(client, "/notifications/", {"webhook_url": "ftp://x", "enabled": "1"})
    assert bad.status_code == 400 and "http:// or https://" in bad.text
    ok = await post_form(
        client,
        "/notifications/",
        {"webhook_url": "http://127.0.0.1:9/hook", "enabled": "1", "error_threshold_pct": "2.5"},
    )
    assert ok.status_code == 200 and 'data-testid="saved"' in ok.text
    assert 'value="2.5"' in ok.text and "http://127.0.0.1:9/hook" in ok.text
    audit = await client.get("/audit/?action=notifications.save")
    assert "notifications.save" in audit.text

    operator = await make_user(maker, unique("op"), Role.OPERATOR)
    await client.post("/logout", data={"_csrf_token": client.cookies.get("kc_csrf")})
    assert (await login(client, operator.username)).status_code == 302
    assert (await client.get("/notifications/")).status_code == 403
    assert (await post_form(client, "/notifications/", {"webhook_url": ""})).status_code == 403


async def test_a_webhook_on_an_internal_address_is_refused(fresh, sessionmaker):
    client, _, _ = fresh
    for url, kind in [
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata"),
        ("https://10.1.2.3/hook", "private"),
        ("http://[::ffff:10.1.2.3]/hook", "private"),
    ]:
        answer = await post_form(client, "/notifications/", {"webhook_url": url, "enabled": "1"})
        assert answer.status_code == 400, url
        assert f"is a {kind} address" in answer.text
    async with sessionmaker() as db:
        assert (await notifications.get_settings(db)).webhook_url != "https://10.1.2.3/hook"


async def test_throughput_and_error_groups_on_both_backends(db_url):
    """The minute arithmetic is dialect-specific (PostgreSQL extract(epoch), SQLite strftime('%s'))."""
    from services import runs as runs_service
    from services.status import throughput

    engine = make_engine(db_url)
    maker = make_sessionmaker(engine)
    try:
        run = await _run(maker, kind="order")
        now = utcnow()
        minute = int(now.timestamp()) // 60 * 60 - 120
        sent = datetime.fromtimestamp(minute + 15, UTC)
        async with maker() as db:
            db.add(_batch(run.id, 0, sent, item_count=7, accepted=7))
            db.add(_batch(run.id, 1, sent + timedelta(seconds=20), item_count=5, accepted=4, rejected=1))
            db.add(RowError(run_id=run.id, row_number=3, rule="invalid_email", message="bad"))
            await db.commit()
        async with maker() as db:
            traffic = await throughput(db, now)
            groups = await runs_service.errors_by_rule(db, run.id)
        series = dict(zip(traffic.minutes, traffic.series["events"], strict=True))
        assert series[minute] >= 11  # other tests may have sent in the same minute
        assert groups[0]["rule"] == "invalid_email" and groups[0]["examples"] == [3]
    finally:
        await engine.dispose()


async def test_overview_survives_a_key_stored_under_another_secret(fresh):
    client, maker, settings = fresh
    other = settings.model_copy(
        update={"secret_key": SecretStr("another-secret-key-that-is-long-enough-000")}
    )
    async with maker() as db:
        set_private_key(await get_account(db), other, LIVE_KEY, None)
        await db.commit()
    page = await client.get("/overview/status")
    assert page.status_code == 200 and "cannot be read" in page.text


async def test_overview_and_metrics_show_each_ingest_sources_backlog(fresh, redis_client):
    import orjson

    from tests.support.ingest import bearer, event_record, event_spec, make_source

    client, maker, test_settings = fresh
    src, token, _, _ = await make_source(maker, test_settings, event_spec(unique("Overview ingest ")))
    records = [event_record(n) for n in range(3)] + [{"id": "bad", "email": "not-an-email"}, event_record(0)]
    answer = await client.post(f"/api/ingest/{src.id}", content=orjson.dumps(records), headers=bearer(token))
    assert answer.status_code == 202 and answer.json()["accepted"] == 3
    try:
        page = (await client.get("/overview/status")).text
        row = re.search(rf'<tr data-source-id="{src.id}">(.*?)</tr>', page, re.S)
        assert row is not None and src.name in row.group(1)
        # waiting, retrying, failed, sent
        assert re.findall(r'<td class="num[^"]*">([\d,]+)</td>', row.group(1)) == ["3", "0", "1", "0"]
        body = (await client.get("/metrics")).text
        assert f'kc_ingest_records{{source="{src.name}",state="waiting"}} 3.0' in body
        assert f'kc_ingest_records{{source="{src.name}",state="failed"}} 1.0' in body
        assert f'kc_ingest_duplicates_total{{source="{src.name}"}} 1.0' in body
    finally:
        # No worker runs here: take the forwarder's job and wake flag off the session's queue.
        queue = test_settings.queue_name
        job = f"{queue}:ingest:{src.id}"
        await redis_client.zrem(queue, job)
        await redis_client.delete(f"arq:job:{job}", f"{queue}:ingest:wake:{src.id}")
