"""Consent changes through the web app: Klaviyo's system webhooks in (signature, staleness, dedup),
the store's pull API out (cursor never skips nor repeats), the CSV download and the page."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import io
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlmodel import col, select

from config.crypto import encrypt_secret
from models import ConsentChange, KlaviyoWebhook, Role
from services import consent
from sync.consent import Change
from tests.support.web import post_form

SECRET = "whsec-test-0123456789abcdef"


async def _hook(sessionmaker, settings) -> KlaviyoWebhook:
    async with sessionmaker() as db:
        row = KlaviyoWebhook(
            klaviyo_id=f"WH{uuid.uuid4().hex[:8]}",
            name="test",
            endpoint_url="http://console/api/klaviyo-webhooks/x",
            secret_encrypted=encrypt_secret(settings.secret, SECRET),
            topics=["event:klaviyo.unsubscribed_from_email_marketing"],
        )
        db.add(row)
        await db.commit()
        await db.refresh(row)
        return row


def _delivery(hook: KlaviyoWebhook, event_id: str, email: str) -> bytes:
    """A delivery shaped as the guide shows: data[] of {topic, external_id, payload (a Get Event)}."""
    event = {
        "type": "event",
        "id": event_id,
        "attributes": {
            "timestamp": 1796292000,
            "event_properties": {"channel": "email"},
            "datetime": "2026-12-03T10:00:00+00:00",
            "uuid": event_id,
        },
        "relationships": {"profile": {"data": {"type": "profile", "id": "P1"}}},
    }
    profile = {"type": "profile", "id": "P1", "attributes": {"email": email, "external_id": "cust-9"}}
    body = {
        "data": [
            {
                "topic": "event:klaviyo.unsubscribed_from_email_marketing",
                "external_id": event_id,
                "payload": {"data": event, "included": [profile]},
            },
            {"topic": "event:klaviyo.opened_email", "external_id": "other", "payload": {"data": {"id": "x"}}},
        ],
        "meta": {"klaviyo_account_id": "SBX000", "klaviyo_webhook_id": hook.klaviyo_id, "timestamp": "now"},
    }
    return json.dumps(body).encode()


def _headers(
    hook: KlaviyoWebhook, body: bytes, stamp: str | None = None, secret: str = SECRET
) -> dict[str, str]:
    # Computed here from the guide's description, not with the console's own function.
    stamp = stamp or str(int(time.time()))
    signature = hmac.new(secret.encode(), body + stamp.encode(), hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "Klaviyo-Webhook-Id": str(hook.klaviyo_id),
        "Klaviyo-Timestamp": stamp,
        "Klaviyo-Signature": signature,
    }


async def _rows(sessionmaker, event_id: str) -> list[ConsentChange]:
    async with sessionmaker() as db:
        return list((await db.exec(select(ConsentChange).where(ConsentChange.event_id == event_id))).all())


async def test_system_webhook_is_stored_once_however_often_it_arrives(client, sessionmaker, settings):
    hook = await _hook(sessionmaker, settings)
    event_id = f"EV{uuid.uuid4().hex[:12]}"
    body = _delivery(hook, event_id, "Left@Shop.io")
    first = await client.post(f"/api/klaviyo-webhooks/{hook.id}", content=body, headers=_headers(hook, body))
    assert first.status_code == 200, first.text
    assert first.json() == {"received": 1, "stored": 1}
    again = await client.post(f"/api/klaviyo-webhooks/{hook.id}", content=body, headers=_headers(hook, body))
    assert again.status_code == 200 and again.json() == {"received": 1, "stored": 0}
    rows = await _rows(sessionmaker, event_id)
    assert len(rows) == 1
    row = rows[0]
    assert (row.kind, row.channel, row.email, row.external_id, row.profile_id, row.source) == (
        "unsubscribed",
        "email",
        "Left@Shop.io",
        "cust-9",
        "P1",
        "webhook",
    )
    assert row.occurred_at.replace(tzinfo=UTC) == datetime(2026, 12, 3, 10, tzinfo=UTC)


async def test_bad_or_stale_signature_is_refused_and_nothing_stored(client, sessionmaker, settings):
    hook = await _hook(sessionmaker, settings)
    url = f"/api/klaviyo-webhooks/{hook.id}"
    cases = {}
    body = _delivery(hook, event_id := f"EV{uuid.uuid4().hex[:12]}", "a@shop.io")
    cases["wrong secret"] = (body, _headers(hook, body, secret="not-the-secret-000000"))
    tampered = body.replace(b"a@shop.io", b"b@shop.io")
    cases["tampered body"] = (tampered, _headers(hook, body))
    old = str(int(time.time()) - 600)
    cases["stale"] = (body, _headers(hook, body, stamp=old))  # correctly signed, 10 minutes old
    cases["missing"] = (body, {"Content-Type": "application/json"})
    wrong_id = dict(_headers(hook, body), **{"Klaviyo-Webhook-Id": "someone-else"})
    cases["other webhook id"] = (body, wrong_id)
    for name, (content, headers) in cases.items():
        answer = await client.post(url, content=content, headers=headers)
        assert answer.status_code == 401, (name, answer.text)
    assert await _rows(sessionmaker, event_id) == []
    unknown = await client.post("/api/klaviyo-webhooks/999999", content=body, headers=_headers(hook, body))
    assert unknown.status_code == 401
    async with sessionmaker() as db:
        refreshed = await db.get(KlaviyoWebhook, hook.id)
    assert refreshed is not None and refreshed.rejected_count == len(cases)


def _change(tag: str, i: int, when: datetime | None = None) -> Change:
    return Change(
        event_id=f"{tag}-{i}",
        kind="unsubscribed",
        channel="email",
        metric="Unsubscribed from Email Marketing",
        occurred_at=when or datetime.now(UTC),
        email=f"p{i}-{tag}@shop.io",
    )


async def _integration(client, as_role, name: str, webhook_url: str = "") -> str:
    await as_role(Role.ADMIN)
    await client.get("/consent")
    answer = await post_form(client, "/consent/integrations", {"name": name, "webhook_url": webhook_url})
    assert answer.status_code == 201, answer.text
    marker = 'data-testid="pull-token">'
    return answer.text.split(marker, 1)[1].split("<", 1)[0]


async def test_pull_cursor_neither_skips_nor_repeats_across_concurrent_inserts(client, as_role, sessionmaker):
    token = await _integration(client, as_role, f"store {uuid.uuid4().hex[:6]}")
    auth = {"Authorization": f"Bearer {token}"}
    assert (
        await client.get("/api/consent-changes?after=0", headers={"Authorization": "Bearer kcc_nope"})
    ).status_code == 401
    assert (await client.get("/api/consent-changes?after=x", headers=auth)).status_code == 400
    start = (await client.get("/api/consent-changes?after=0&limit=500", headers=auth)).json()
    cursor = start["next_cursor"]
    while start["has_more"]:
        start = (await client.get(f"/api/consent-changes?after={cursor}&limit=500", headers=auth)).json()
        cursor = start["next_cursor"]
    tag = uuid.uuid4().hex[:8]

    async def slow_writer(i: int) -> None:
        # Takes its ids first, then holds its transaction open while faster writers commit.
        async with sessionmaker() as db:
            await consent.record_changes(db, [_change(tag, i)], "poll")
            await asyncio.sleep(0.3)
            await db.commit()

    async def fast_writer(i: int) -> None:
        await asyncio.sleep(0.05)
        async with sessionmaker() as db:
            await consent.record_changes(db, [_change(tag, i)], "poll")
            await db.commit()

    pulled: list[int] = []
    done = asyncio.Event()

    async def puller() -> None:
        nonlocal cursor
        while True:
            finished = done.is_set()
            page = (await client.get(f"/api/consent-changes?after={cursor}&limit=3", headers=auth)).json()
            pulled.extend(c["id"] for c in page["changes"] if c["event_id"].startswith(tag))
            cursor = page["next_cursor"]
            if finished and not page["changes"]:
                return
            await asyncio.sleep(0.01)

    async def writers() -> None:
        for round_ in range(4):
            await asyncio.gather(
                slow_writer(round_ * 10), *(fast_writer(round_ * 10 + k) for k in range(1, 4))
            )
        done.set()

    await asyncio.gather(puller(), writers())
    async with sessionmaker() as db:
        query = select(ConsentChange.id).where(col(ConsentChange.event_id).startswith(tag))
        stored = sorted(int(i) for i in (await db.exec(query)).all())
    assert len(stored) == 16
    assert pulled == stored  # every change once, in ledger order


async def test_csv_download_for_a_date_range(client, as_role, sessionmaker):
    await as_role(Role.VIEWER)
    tag = uuid.uuid4().hex[:8]
    inside = datetime(2026, 6, 10, 12, tzinfo=UTC)
    async with sessionmaker() as db:
        await consent.record_changes(
            db,
            [
                _change(tag, 1, inside),
                _change(tag, 2, inside + timedelta(days=1, hours=11)),
                _change(tag, 3, inside + timedelta(days=5)),
                Change(f"{tag}-4", "bounced", "email", "Bounced Email", inside, email=f"=cmd-{tag}@shop.io"),
            ],
            "poll",
        )
        await db.commit()
    answer = await client.get("/consent/changes.csv?from=2026-06-10&to=2026-06-11")
    assert answer.status_code == 200
    assert "attachment" in answer.headers["content-disposition"]
    rows = [r for r in csv.DictReader(io.StringIO(answer.text)) if tag in r["event_id"]]
    assert sorted(r["event_id"] for r in rows) == [f"{tag}-1", f"{tag}-2", f"{tag}-4"]
    bounced = next(r for r in rows if r["event_id"] == f"{tag}-4")
    assert bounced["kind"] == "bounced" and bounced["email"].startswith("'=")  # no formula runs
    only = await client.get("/consent/changes.csv?from=2026-06-10&to=2026-06-11&kind=bounced")
    assert [r["event_id"] for r in csv.DictReader(io.StringIO(only.text)) if tag in r["event_id"]] == [
        f"{tag}-4"
    ]
    bad = await client.get("/consent/changes.csv?from=2026-06-12&to=2026-06-11")
    assert bad.status_code == 400 and "before the" in bad.text
    page = await client.get("/consent?kind=bounced")
    assert page.status_code == 200 and f"=cmd-{tag}@shop.io" in page.text


async def test_subscription_import_form_warns_about_rows_that_undo_a_later_opt_out(
    client, as_role, sessionmaker, settings
):
    from sync.mapping import Mapping as Spec
    from sync.mapping import MappingOptions, Target, TargetKind, column
    from tests.support.runs import make_mapping, make_upload

    tag = uuid.uuid4().hex[:8]
    await as_role(Role.OPERATOR)
    spec = Spec(
        name=f"subscribe {tag}",
        target=Target(kind=TargetKind.SUBSCRIPTION),
        options=MappingOptions(historical_import=True),
        fields=[column("Email", "email"), column("Consented", "consented_at")],
    )
    await make_mapping(sessionmaker, spec)
    gone, back, old = f"gone-{tag}@shop.io", f"back-{tag}@shop.io", f"old-{tag}@shop.io"
    upload = await make_upload(
        sessionmaker,
        settings.upload_dir,
        "Email,Consented\n"
        f"{gone.upper()},2026-01-01T00:00:00+00:00\n"  # unsubscribed in March: warn
        f"{back},2026-01-01T00:00:00+00:00\n"  # unsubscribed, then resubscribed: fine
        f"{old},2026-06-01T00:00:00+00:00\n"  # unsubscribed before consenting again: fine
        f"new-{tag}@shop.io,2026-01-01T00:00:00+00:00\n",
        filename="subscribers.csv",
    )
    march = datetime(2026, 3, 1, tzinfo=UTC)

    def change(email: str, kind: str, when: datetime, n: int) -> Change:
        return Change(f"{tag}-{n}", kind, "email", "m", when, email=email)

    async with sessionmaker() as db:
        await consent.record_changes(
            db,
            [
                change(gone, "unsubscribed", march, 1),
                change(back, "unsubscribed", march, 2),
                change(back, "subscribed", march + timedelta(days=1), 3),
                change(old, "bounced", march, 4),
            ],
            "poll",
        )
        await db.commit()
    page = await client.get(f"/uploads/{upload.id}")
    assert page.status_code == 200
    warning = page.text.split('data-testid="resubscribe-warning"', 1)[1].split("</div>", 1)[0]
    assert "1 row would resubscribe" in warning
    assert f"row 1: {gone}" in warning.lower() and "unsubscribed in klaviyo 2026-03-01" in warning.lower()
    assert back not in warning and old not in warning
