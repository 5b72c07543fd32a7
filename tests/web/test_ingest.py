"""The ingest API over HTTP (auth, signature, bad bodies, dedup) and the /ingest pages (tokens shown once)."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import pytest
from sqlmodel import col, select

from models import AuditEvent, InboxStatus, IngestRecord, IngestSource, Role
from services import ingest
from tests.support.env import unique
from tests.support.ingest import (
    bearer,
    drop_unsent_records,
    event_record,
    event_spec,
    make_source,
    order_record,
    order_spec,
)
from tests.support.web import csrf, post_form


async def records_of(sessionmaker, source_id: int) -> list[IngestRecord]:
    async with sessionmaker() as db:
        query = select(IngestRecord).where(IngestRecord.source_id == source_id).order_by(col(IngestRecord.id))
        return list((await db.exec(query)).all())


@pytest.fixture(autouse=True)
async def _no_forwarder_jobs_left(settings, redis_client, sessionmaker):
    """Accepted records wake a forwarder; no worker runs here, so take its jobs (and wake flags) off
    the session's queue and the unsent records out of the inbox, or later tests would find them."""
    yield
    await drop_unsent_records(sessionmaker)
    queue = settings.queue_name
    for job in await redis_client.zrange(queue, 0, -1):
        if job.decode().startswith(f"{queue}:ingest:"):
            await redis_client.zrem(queue, job)
            await redis_client.delete(f"arq:job:{job.decode()}")
    flags = [key async for key in redis_client.scan_iter(match=f"{queue}:ingest:wake:*")]
    if flags:
        await redis_client.delete(*flags)


@pytest.fixture
async def source(sessionmaker, settings):
    return await make_source(sessionmaker, settings, event_spec(unique("Ingest API ")))


async def test_one_record_or_many_are_stored_and_answered_202(client, sessionmaker, source):
    src, token, _, _ = source
    one = await client.post(
        f"/api/ingest/{src.id}", content=orjson.dumps(event_record(1)), headers=bearer(token)
    )
    assert one.status_code == 202, one.text
    assert one.json() == {
        "received": 1,
        "accepted": 1,
        "duplicates": 0,
        "skipped": 0,
        "rejected": 0,
        "errors": [],
    }
    many = [event_record(n) for n in range(2, 12)]
    answer = await client.post(f"/api/ingest/{src.id}", content=orjson.dumps(many), headers=bearer(token))
    assert answer.status_code == 202 and answer.json()["accepted"] == 10
    stored = await records_of(sessionmaker, src.id)
    # Within one commit rows go in key order (concurrent commits of the same keys never deadlock).
    assert sorted(r.dedup_key for r in stored) == sorted(f"e-{n}" for n in range(1, 12))
    assert all(r.status == InboxStatus.PENDING for r in stored)
    assert next(r for r in stored if r.dedup_key == "e-4").body == event_record(4)


async def test_the_same_record_posted_twice_is_stored_once(client, sessionmaker, settings):
    src, token, _, _ = await make_source(sessionmaker, settings, order_spec(unique("orders ")))
    order = orjson.dumps(order_record("A-1001"))
    first = await client.post(f"/api/ingest/{src.id}", content=order, headers=bearer(token))
    again = await client.post(f"/api/ingest/{src.id}", content=order, headers=bearer(token))
    assert first.json()["accepted"] == 1
    assert again.status_code == 202 and again.json()["accepted"] == 0 and again.json()["duplicates"] == 1
    # A repeat inside one request is a duplicate too; the key is the order id, not the whole body.
    changed = {**order_record("A-1002"), "email": "other@shop.test"}
    both = await client.post(
        f"/api/ingest/{src.id}",
        content=orjson.dumps([order_record("A-1002"), changed]),
        headers=bearer(token),
    )
    assert both.json()["accepted"] == 1 and both.json()["duplicates"] == 1
    assert [r.dedup_key for r in await records_of(sessionmaker, src.id)] == ["A-1001", "A-1002"]
    async with sessionmaker() as db:
        assert (await db.get(IngestSource, src.id)).duplicate_count == 2


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer kci_wrong"}, {"authorization": "Basic abc"}],
    ids=["missing", "wrong", "not-bearer"],
)
async def test_a_bad_token_is_401(client, sessionmaker, source, headers):
    src, _, _, _ = source
    answer = await client.post(f"/api/ingest/{src.id}", content=b"{}", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert "token" in answer.json()["detail"].lower()
    assert await records_of(sessionmaker, src.id) == []


async def test_another_sources_token_an_unknown_source_and_a_revoked_token_are_401(
    client, sessionmaker, settings, source
):
    src, token, _, _ = source
    other, other_token, _, _ = await make_source(sessionmaker, settings, event_spec(unique("Other ")))
    body = orjson.dumps(event_record(1))
    assert (
        await client.post(f"/api/ingest/{src.id}", content=body, headers=bearer(other_token))
    ).status_code == 401
    assert (await client.post("/api/ingest/999999", content=body, headers=bearer(token))).status_code == 401
    async with sessionmaker() as db:
        row = await db.get(IngestSource, other.id)
        ingest.revoke(db, row)
        await db.commit()
    answer = await client.post(f"/api/ingest/{other.id}", content=body, headers=bearer(other_token))
    assert answer.status_code == 401 and "revoked" in answer.json()["detail"]


async def test_signed_sources_need_a_matching_signature(client, sessionmaker, settings):
    src, token, secret, _ = await make_source(
        sessionmaker, settings, event_spec(unique("Signed ")), signed=True
    )
    assert secret
    body = orjson.dumps(event_record(1))
    unsigned = await client.post(f"/api/ingest/{src.id}", content=body, headers=bearer(token))
    assert unsigned.status_code == 401 and "X-Signature" in unsigned.json()["detail"]
    forged = await client.post(
        f"/api/ingest/{src.id}",
        content=body,
        headers={**bearer(token), "x-signature": ingest.sign("not the secret", body)},
    )
    assert forged.status_code == 401 and "does not match" in forged.json()["detail"]
    # The signature covers the exact bytes: re-serialised JSON with the same meaning does not match.
    spaced = orjson.dumps(event_record(1), option=orjson.OPT_INDENT_2)
    moved = await client.post(
        f"/api/ingest/{src.id}",
        content=spaced,
        headers={**bearer(token), "x-signature": ingest.sign(secret, body)},
    )
    assert moved.status_code == 401
    good = await client.post(
        f"/api/ingest/{src.id}",
        content=body,
        headers={**bearer(token), "x-signature": ingest.sign(secret, body)},
    )
    assert good.status_code == 202, good.text
    assert len(await records_of(sessionmaker, src.id)) == 1
    async with sessionmaker() as db:
        stored = await db.get(IngestSource, src.id)
    assert secret not in (stored.signing_secret_encrypted or "")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"id": "1", "email": ', "The body is not valid JSON: "),
        (b"", "The body is empty"),
        (b"[]", "The array is empty"),
        (b'[{"id": "1"}, "x"]', "Item 1 of the array is a JSON string; each record must be a JSON object."),
        (b"42", "The body is a JSON number; each record must be a JSON object."),
    ],
    ids=["truncated", "empty", "empty-array", "string-item", "number"],
)
async def test_malformed_bodies_are_400_with_a_clear_message(client, sessionmaker, source, body, message):
    src, token, _, _ = source
    answer = await client.post(f"/api/ingest/{src.id}", content=body, headers=bearer(token))
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith(message), answer.json()
    assert await records_of(sessionmaker, src.id) == []


async def test_a_truncated_body_names_where_it_broke(client, source):
    src, token, _, _ = source
    answer = await client.post(
        f"/api/ingest/{src.id}", content=b'{"id": "1",\n "email": }', headers=bearer(token)
    )
    assert "line 2" in answer.json()["detail"]


async def test_an_oversized_body_is_413(client, sessionmaker, source, settings):
    src, token, _, _ = source
    records = [event_record(n) for n in range(settings.ingest_max_body_bytes // 60)]
    body = orjson.dumps(records)
    assert len(body) > settings.ingest_max_body_bytes
    answer = await client.post(f"/api/ingest/{src.id}", content=body, headers=bearer(token))
    assert answer.status_code == 413
    assert f"{settings.ingest_max_body_bytes:,} bytes" in answer.json()["detail"]

    assert await records_of(sessionmaker, src.id) == []


async def test_a_streamed_body_without_a_length_is_cut_off_at_the_limit(
    client, sessionmaker, source, settings
):
    # httpx's test transport always knows the length, so speak ASGI to the app: chunks far past the
    # limit, no Content-Length to refuse them by up front.
    src, token, _, _ = source
    chunk = orjson.dumps([event_record(n) for n in range(100)])
    chunks = settings.ingest_max_body_bytes // len(chunk) + 2
    sent: list[dict] = []
    pulled = 0

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": pulled < chunks}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"/api/ingest/{src.id}",
        "raw_path": f"/api/ingest/{src.id}".encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {token}".encode()), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "state": {},
    }
    await client.app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert f"{settings.ingest_max_body_bytes:,} bytes".encode() in sent[1]["body"]
    assert pulled < chunks  # it stopped reading at the limit
    assert await records_of(sessionmaker, src.id) == []


@contextlib.asynccontextmanager
async def own_database_app(settings):
    """(client, source, token, url) for an app on a migrated database of this test's own, which
    the test may break; dropped at the end."""
    from litestar.testing import AsyncTestClient

    from cli.migrate import migrate
    from models.db import make_engine, make_sessionmaker
    from tests.support.databases import acreate_postgres_database, adrop_postgres_database
    from tests.support.env import TEST_DATABASE_URL
    from web.app import create_app

    url = await acreate_postgres_database(TEST_DATABASE_URL, unique("kc_ingest_"))
    assert await asyncio.to_thread(migrate, url) == 0
    own = settings.model_copy(update={"database_url": url})
    engine = make_engine(url)
    try:
        src, token, _, _ = await make_source(make_sessionmaker(engine), own, event_spec(unique("Own db ")))
        await engine.dispose()
        async with AsyncTestClient(create_app(own)) as client:
            yield client, src, token, url
    finally:
        await engine.dispose()
        await adrop_postgres_database(TEST_DATABASE_URL, url)


async def test_a_database_gone_mid_traffic_is_a_503_in_json_and_keeps_nothing(settings):
    """The store's integration must know to retry: JSON (never the HTML error page) and Retry-After."""
    from tests.support.databases import adrop_postgres_database
    from tests.support.env import TEST_DATABASE_URL

    async with own_database_app(settings) as (client, src, token, url):
        path = f"/api/ingest/{src.id}"
        first = await client.post(path, content=orjson.dumps(event_record(1)), headers=bearer(token))
        assert first.status_code == 202
        await adrop_postgres_database(TEST_DATABASE_URL, url)
        gone = await client.post(path, content=orjson.dumps(event_record(2)), headers=bearer(token))
        assert gone.status_code == 503
        assert gone.headers["content-type"] == "application/json"
        assert gone.headers["retry-after"] == "5"
        assert "nothing was kept" in gone.json()["detail"]


async def test_the_api_recovers_once_its_database_connections_were_cut(settings):
    """A database restart cuts every connection: the API answers again without a restart of its own."""
    import asyncpg
    from sqlalchemy.engine import make_url

    from tests.support.env import TEST_DATABASE_URL

    async with own_database_app(settings) as (client, src, token, url):
        path = f"/api/ingest/{src.id}"
        statuses = []
        for n in range(12):
            if n in (3, 5):
                admin = await asyncpg.connect(
                    make_url(TEST_DATABASE_URL).set(drivername="postgresql").render_as_string(False)
                )
                try:
                    cut = await admin.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
                        make_url(url).database,
                    )
                finally:
                    await admin.close()
                assert cut >= 1
            answer = await client.post(path, content=orjson.dumps(event_record(n)), headers=bearer(token))
            statuses.append(answer.status_code)
        # At most the first request after each cut fails (nothing kept, 503), then all is well.
        assert statuses[:3] == [202] * 3 and statuses[6:] == [202] * 6, statuses
        assert set(statuses) <= {202, 503}
        accepted = {f"e-{n}" for n, code in enumerate(statuses) if code == 202}
        from models.db import make_engine

        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                stored = set((await conn.execute(select(IngestRecord.dedup_key))).scalars())
        finally:
            await engine.dispose()
        assert stored == accepted


async def test_the_store_connects_with_the_database_urls_options(settings, sessionmaker, source):
    """DATABASE_URL options the app's engine understands (`?ssl=...`, the adapter's cache size) must
    not break ingest: asyncpg's own DSN parser sends unknown ones to the server, which refuses them."""
    from sqlalchemy.engine import make_url

    from models.base import utcnow
    from models.db import make_engine
    from services.ingest_inbox import GroupCommitter

    src, _, _, _ = source
    url = make_url(settings.database_url).update_query_dict(
        {"ssl": "disable", "prepared_statement_cache_size": "100"}
    )
    engine = make_engine(url.render_as_string(hide_password=False))
    committer = GroupCommitter(engine)
    row = {
        "dedup_key": "url-options-1",
        "body": {"id": "url-options-1"},
        "received_at": utcnow(),
        "status": InboxStatus.PENDING,
        "error_kind": None,
        "last_error": None,
        "attempts": 0,
    }
    try:
        assert await committer.store(src.id, [row]) == {"url-options-1"}
    finally:
        await committer.close()
        await engine.dispose()
    assert [r.dedup_key for r in await records_of(sessionmaker, src.id)] == ["url-options-1"]


async def test_records_the_mapping_refuses_are_answered_and_kept_as_failed(client, sessionmaker, source):
    src, token, _, _ = source
    bad = {"id": "b-1", "email": "not-an-email"}
    answer = await client.post(
        f"/api/ingest/{src.id}", content=orjson.dumps([event_record(1), bad]), headers=bearer(token)
    )
    assert answer.status_code == 202
    body = answer.json()
    assert body["accepted"] == 1 and body["rejected"] == 1
    assert body["errors"][0]["index"] == 1 and body["errors"][0]["errors"][0]["field"] == "email"
    failed = [r for r in await records_of(sessionmaker, src.id) if r.status == InboxStatus.FAILED]
    assert len(failed) == 1 and failed[0].error_kind == "mapping" and "email" in failed[0].last_error


async def test_the_api_needs_no_session_or_csrf(app, sessionmaker, source):
    # A fresh client: no cookies at all, as a store's server would post.
    from litestar.testing import AsyncTestClient

    src, token, _, _ = source
    async with AsyncTestClient(app) as fresh:
        answer = await fresh.post(
            f"/api/ingest/{src.id}", content=orjson.dumps(event_record(1)), headers=bearer(token)
        )
        assert answer.status_code == 202
        assert "set-cookie" not in answer.headers


# ---------------------------------------------------------------- pages


async def test_admin_creates_a_source_and_sees_the_token_once(client, sessionmaker, settings, as_role):
    await as_role(Role.ADMIN)
    spec = event_spec(unique("Page "))
    from tests.support.runs import make_mapping

    mapping = await make_mapping(sessionmaker, spec)
    page = await client.get("/ingest")
    assert page.status_code == 200 and "New source" in page.text and spec.name in page.text
    name = unique("Storefront ")
    created = await post_form(client, "/ingest", {"name": name, "mapping_id": str(mapping.id), "signed": "1"})
    assert created.status_code == 201, created.text
    token = created.text.split('data-testid="new-token"')[0].rsplit('value="', 1)[1].split('"')[0]
    assert token.startswith("kci_")
    assert 'data-testid="new-secret"' in created.text
    async with sessionmaker() as db:
        src = (await db.exec(select(IngestSource).where(IngestSource.name == name))).one()
    assert src.token_hash == ingest.hash_token(token) and src.signing_secret_encrypted
    detail = await client.get(f"/ingest/{src.id}")
    assert token not in detail.text and f"…{token[-4:]}" in detail.text
    assert f"/api/ingest/{src.id}" in detail.text
    # The token works; a rotated one replaces it at once.
    body = orjson.dumps(event_record(1))
    signed = {**bearer(token), "x-signature": "sha256=" + "0" * 64}
    assert (await client.post(f"/api/ingest/{src.id}", content=body, headers=signed)).status_code == 401
    rotated = await post_form(client, f"/ingest/{src.id}/rotate")
    new = rotated.text.split('data-testid="new-token"')[0].rsplit('value="', 1)[1].split('"')[0]
    assert new != token
    assert (
        await client.post(f"/api/ingest/{src.id}", content=body, headers=bearer(token))
    ).status_code == 401
    revoked = await post_form(client, f"/ingest/{src.id}/revoke", follow_redirects=True)
    assert 'data-testid="token-state">revoked' in revoked.text
    async with sessionmaker() as db:
        actions = (
            await db.exec(select(AuditEvent.action).where(col(AuditEvent.target) == f"ingest source {name}"))
        ).all()
    assert set(actions) == {"ingest.create", "ingest.rotate_token", "ingest.revoke"}


async def test_create_refuses_bad_input_with_a_message(client, sessionmaker, as_role):
    await as_role(Role.ADMIN)
    from tests.support.runs import make_mapping, ordered_product_spec

    profile_like = await make_mapping(sessionmaker, ordered_product_spec(unique("ok ")))
    answer = await post_form(client, "/ingest", {"name": "", "mapping_id": str(profile_like.id)})
    assert answer.status_code == 400 and "needs a name" in answer.text
    answer = await post_form(client, "/ingest", {"name": unique("x "), "mapping_id": "987654"})
    assert answer.status_code == 400 and "no longer exists" in answer.text


async def test_only_admins_manage_tokens_and_viewers_only_look(
    client, sessionmaker, settings, source, as_role
):
    src, _, _, _ = source
    await as_role(Role.OPERATOR)
    assert (await client.get(f"/ingest/{src.id}")).status_code == 200
    assert (await post_form(client, f"/ingest/{src.id}/rotate")).status_code == 403
    assert (await post_form(client, "/ingest", {"name": "x", "mapping_id": "1"})).status_code == 403
    await as_role(Role.VIEWER)
    assert (await post_form(client, f"/ingest/{src.id}/retry")).status_code == 403
    page = await client.get("/ingest")
    assert page.status_code == 200 and "New source" not in page.text
    assert csrf(client)


# ---------------------------------------------------------------- routes (one endpoint, a whole plan)


def _route_cells(html: str, event: str) -> dict[str, str]:
    import re

    row = html.split(f'<tr data-route="{event}">', 1)[1].split("</tr>", 1)[0]
    return dict(re.findall(r'data-testid="route-(\w+)">([^<]*)<', row))


async def test_a_tracking_plan_source_shows_per_route_counts_over_the_last_day(client, sessionmaker, as_role):
    from datetime import timedelta

    from sqlalchemy import update

    from models.base import utcnow

    await as_role(Role.ADMIN)
    name = unique("Plan ")
    created = await post_form(client, "/ingest", {"name": name, "mapping_id": "", "spec": "1"})
    assert created.status_code == 201, created.text
    token = created.text.split('data-testid="new-token"')[0].rsplit('value="', 1)[1].split('"')[0]
    async with sessionmaker() as db:
        src = (await db.exec(select(IngestSource).where(IngestSource.name == name))).one()
    assert src.mapping_id is None
    assert 'data-route="Order Completed"' in created.text and 'data-route="Checkout Started"' in created.text

    def order(order_id: str | None) -> dict:
        properties = {"total": 10, "products": [{"sku": "A", "price": 10}]}
        if order_id:
            properties["order_id"] = order_id
        return {"event": "Order Completed", "userId": "u-1", "properties": properties}

    shipped = {"event": "Order Shipped", "userId": "u-1", "properties": {"order_id": "P-1"}}
    body = [order("P-1"), order("P-2"), order("P-3"), order(None), shipped, shipped | {"n": 2}]
    answer = await client.post(f"/api/ingest/{src.id}", content=orjson.dumps(body), headers=bearer(token))
    assert answer.status_code == 202, answer.text
    assert (answer.json()["accepted"], answer.json()["rejected"], answer.json()["unrouted"]) == (3, 1, 2)
    orders = [r for r in await records_of(sessionmaker, src.id) if r.status == InboxStatus.PENDING]
    assert {r.route for r in orders} == {"order completed"}
    async with sessionmaker() as db:
        # One order went out, one arrived two days ago (outside the window).
        await db.exec(update(IngestRecord).where(col(IngestRecord.id) == orders[0].id).values(status="sent"))
        await db.exec(
            update(IngestRecord)
            .where(col(IngestRecord.id) == orders[1].id)
            .values(received_at=utcnow() - timedelta(days=2))
        )
        await db.commit()

    page = await client.get(f"/ingest/{src.id}")
    assert _route_cells(page.text, "Order Completed") == {
        "received": "3",
        "sent": "1",
        "refused": "1",
    }
    assert _route_cells(page.text, "Product Added") == {"received": "0", "sent": "0", "refused": "0"}
    unrouted = page.text.split('<tr data-unrouted="Order Shipped">', 1)[1].split("</tr>", 1)[0]
    assert 'data-testid="unrouted-kept">2<' in unrouted and "Route and send 2" in unrouted

    # A viewer sees the plan but cannot change it.
    await as_role(Role.VIEWER)
    viewed = await client.get(f"/ingest/{src.id}")
    assert 'data-testid="route-table"' in viewed.text and 'data-testid="route-form"' not in viewed.text
    assert (
        await post_form(client, f"/ingest/{src.id}/routes", {"event": "x", "mapping_id": "1"})
    ).status_code == 403


async def test_routes_refuse_bad_input_and_can_be_removed(client, sessionmaker, settings, as_role):
    from services import ingest_routes
    from tests.support.runs import make_mapping, ordered_product_spec

    await as_role(Role.OPERATOR)
    src, _, _, mapping = await make_source(sessionmaker, settings, event_spec(unique("Routes ")))
    other = await make_mapping(sessionmaker, ordered_product_spec(unique("lines ")))
    blank = await post_form(
        client, f"/ingest/{src.id}/routes", {"event": "  ", "mapping_id": str(mapping.id)}
    )
    assert blank.status_code == 400 and "Type the event name" in blank.text
    added = await post_form(
        client, f"/ingest/{src.id}/routes", {"event": "Order Shipped", "mapping_id": str(mapping.id)}
    )
    assert added.status_code in (200, 303)
    again = await post_form(
        client, f"/ingest/{src.id}/routes", {"event": "order  SHIPPED", "mapping_id": str(other.id)}
    )
    assert again.status_code == 400 and "routed already" in again.text
    async with sessionmaker() as db:
        ((route, _),) = await ingest_routes.list_routes(db, src.id)
    removed = await post_form(client, f"/ingest/{src.id}/routes/{route.id}/remove", follow_redirects=True)
    assert removed.status_code == 200 and 'data-route="Order Shipped"' not in removed.text
    async with sessionmaker() as db:
        actions = (
            await db.exec(
                select(AuditEvent.action).where(col(AuditEvent.target) == f"ingest source {src.name}")
            )
        ).all()
    assert {"ingest.route_add", "ingest.route_remove"} <= set(actions)


async def test_concurrent_requests_share_one_read_of_the_source(settings, source, monkeypatch):
    """When the cached credentials run out, the requests arriving meanwhile wait for one read of the
    source and its routes, not one each (the tail latency of a busy second)."""
    from models.db import make_engine, make_sessionmaker
    from services.ingest_inbox import Inbox

    src, token, _, _ = source
    reads: list[int] = []
    read = Inbox._read_credentials

    async def counted(self: Inbox, source_id: int):
        reads.append(source_id)
        await asyncio.sleep(0.05)  # a read that takes a while, as under load
        return await read(self, source_id)

    monkeypatch.setattr(Inbox, "_read_credentials", counted)
    engine = make_engine(settings.database_url)
    inbox = Inbox(engine, make_sessionmaker(engine), settings)
    try:
        answers = await asyncio.gather(
            *(inbox.accept(src.id, f"Bearer {token}", None, orjson.dumps(event_record(n))) for n in range(20))
        )
    finally:
        await inbox.close()
        await engine.dispose()
    assert [a.accepted for a in answers] == [1] * 20
    assert reads == [src.id]


def _adds_up(answer: dict) -> bool:
    parts = answer["accepted"] + answer["duplicates"] + answer["skipped"] + answer["rejected"]
    return answer["received"] == parts


async def test_more_records_than_the_cap_is_a_413_naming_the_setting(client, sessionmaker, source, settings):
    src, token, _, _ = source
    cap = settings.ingest_max_records
    body = orjson.dumps([{}] * (cap + 1))
    assert len(body) < settings.ingest_max_body_bytes
    answer = await client.post(f"/api/ingest/{src.id}", content=body, headers=bearer(token))
    assert answer.status_code == 413
    assert "INGEST_MAX_RECORDS" in answer.json()["detail"] and f"{cap:,}" in answer.json()["detail"]
    assert await records_of(sessionmaker, src.id) == []


async def test_the_answer_does_not_grow_with_the_rejected_records(client, sessionmaker, source, settings):
    src, token, _, _ = source
    few = await client.post(f"/api/ingest/{src.id}", content=orjson.dumps([{"n": 1}]), headers=bearer(token))
    records = [{"n": n} for n in range(settings.ingest_max_records)]
    many = await client.post(f"/api/ingest/{src.id}", content=orjson.dumps(records), headers=bearer(token))
    assert many.status_code == 202, many.text
    answer = many.json()
    assert answer["rejected"] == len(records) and _adds_up(answer)
    assert [e["index"] for e in answer["errors"]] == list(range(20))
    assert answer["errors_omitted"] == len(records) - 20
    # The detail of twenty records, whatever the body held.
    assert len(many.content) < len(few.content) * 25 < 20_000


async def test_counts_add_up_and_a_repeated_refused_record_counts_once(client, sessionmaker, source):
    src, token, _, _ = source
    body = orjson.dumps([{}, event_record(7), event_record(7)])
    first = (await client.post(f"/api/ingest/{src.id}", content=body, headers=bearer(token))).json()
    again = (await client.post(f"/api/ingest/{src.id}", content=b"[{}]", headers=bearer(token))).json()
    assert (first["received"], first["accepted"], first["duplicates"], first["rejected"]) == (3, 1, 1, 1)
    assert (again["received"], again["duplicates"], again["rejected"]) == (1, 0, 1)
    assert _adds_up(first) and _adds_up(again)


async def test_a_timestamped_signature_is_accepted_only_within_five_minutes(client, sessionmaker, settings):
    import time

    src, token, secret, _ = await make_source(
        sessionmaker, settings, event_spec(unique("Stamped ")), signed=True
    )
    body = orjson.dumps(event_record(11))

    def stamped(at: int) -> dict[str, str]:
        signature = ingest.sign(secret, f"{at}.".encode() + body)
        return {**bearer(token), "x-signature": signature, "x-signature-timestamp": str(at)}

    now = int(time.time())
    fresh = await client.post(f"/api/ingest/{src.id}", content=body, headers=stamped(now))
    assert fresh.status_code == 202, fresh.text
    # A request captured six minutes ago and sent again: refused, nothing stored twice.
    old = await client.post(f"/api/ingest/{src.id}", content=body, headers=stamped(now - 360))
    assert old.status_code == 401 and "X-Signature-Timestamp" in old.json()["detail"]
    # The timestamp is covered by the signature: a fresh stamp on the old signature does not match.
    moved = {**stamped(now - 360), "x-signature-timestamp": str(now)}
    forged = await client.post(f"/api/ingest/{src.id}", content=body, headers=moved)
    assert forged.status_code == 401 and "does not match" in forged.json()["detail"]
    assert len(await records_of(sessionmaker, src.id)) == 1
