"""Polling Klaviyo's consent metrics into the ledger: the simulator as Klaviyo (Events API filtered by
metric and datetime, cursor pages), PostgreSQL and Redis for real."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from sqlalchemy import delete
from sqlmodel import col, select

from models import ConsentChange, ConsentPollState
from services.accounts import get_account, set_private_key, use_sandbox
from simulator.config import SANDBOX_KEY
from tests.conftest import REDIS_URL
from workers.consent import poll_consent


@pytest.fixture
async def poll_ctx(settings, simulator_url, sessionmaker) -> AsyncIterator[dict[str, Any]]:
    async with sessionmaker() as db:
        account = await get_account(db)
        account.sandbox = True
        db.add(account)
        await db.execute(delete(ConsentPollState))
        await db.commit()
    redis = ArqRedis.from_url(REDIS_URL)
    redis.default_queue_name = settings.queue_name
    async with httpx.AsyncClient(timeout=30) as http:
        yield {
            "settings": settings.model_copy(
                update={"sandbox_url": simulator_url, "klaviyo_time_scale": 20.0}
            ),
            "sessionmaker": sessionmaker,
            "redis": redis,
            "http": http,
        }
    await redis.aclose()


def change_in_klaviyo(
    simulator_url: str, kind: str, email: str, at: datetime, channel: str = "email", account: str = "SBX000"
) -> str:
    """What a recipient does in Klaviyo (or a bounce), at a given time; returns the event id."""
    body = {"kind": kind, "email": email, "channel": channel, "at": at.isoformat(), "account": account}
    answer = httpx.post(f"{simulator_url}/__sim/consent-changes", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["event_id"])


async def ledger_for(sessionmaker, emails: set[str]) -> list[ConsentChange]:
    async with sessionmaker() as db:
        query = (
            select(ConsentChange).where(col(ConsentChange.email).in_(emails)).order_by(col(ConsentChange.id))
        )
        return list((await db.exec(query)).all())


def events_requests(simulator_url: str) -> int:
    stats = httpx.get(f"{simulator_url}/__sim/stats", timeout=10).json()
    return sum((stats["requests"].get("GET /api/events") or {}).values())


@pytest.fixture
async def own_account(poll_ctx, simulator_url, sessionmaker) -> AsyncIterator[tuple[dict[str, Any], str]]:
    """A Klaviyo account of this test's own in the session's simulator: the consent events other tests
    left in the sandbox account are newer than this test's backdated ones, and a first poll that read
    them would rightly put the mark past the downtime."""
    account_id = f"POLL{uuid.uuid4().hex[:8].upper()}"
    key = f"pk_poll_{account_id.lower()}_0123456789"
    added = {"add": [{"key": key, "account": {"id": account_id, "public_key": account_id[:6]}}]}
    httpx.post(f"{simulator_url}/__sim/keys", json=added, timeout=10).raise_for_status()
    settings = poll_ctx["settings"].model_copy(update={"klaviyo_base_url": simulator_url})
    async with sessionmaker() as db:
        account = await get_account(db)
        set_private_key(account, settings, key, None)
        db.add(account)
        await db.commit()
    try:
        yield dict(poll_ctx, settings=settings), account_id
    finally:
        async with sessionmaker() as db:
            account = await get_account(db)
            use_sandbox(account)
            db.add(account)
            await db.commit()


async def test_polling_after_two_hours_of_downtime_catches_up_exactly_once(
    own_account, simulator_url, sessionmaker
):
    poll_ctx, account_id = own_account
    tag = uuid.uuid4().hex[:8]
    now = datetime.now(UTC).replace(microsecond=0)
    async with sessionmaker() as db:
        db.add(ConsentPollState(started_at=now - timedelta(hours=3)))
        await db.commit()
    # Before the downtime: one change of each kind, polled while the worker still ran.
    before = {
        change_in_klaviyo(
            simulator_url,
            kind,
            f"before-{kind}-{tag}@shop.io",
            now - timedelta(hours=2, minutes=30),
            account=account_id,
        )
        for kind in ("unsubscribe", "resubscribe", "spam", "bounce")
    }
    first = await poll_consent(poll_ctx)
    assert first["status"] == "ok", first
    emails_before = {
        f"before-{kind}-{tag}@shop.io" for kind in ("unsubscribe", "resubscribe", "spam", "bounce")
    }
    assert {c.event_id for c in await ledger_for(sessionmaker, emails_before)} == before

    # Two hours with no worker: 230 unsubscribes (more than one page of 200) and a few others.
    during: dict[str, tuple[str, str, datetime]] = {}
    for i in range(230):
        at = now - timedelta(hours=2) + timedelta(seconds=30 * i)
        email = f"gone-{i}-{tag}@shop.io"
        during[change_in_klaviyo(simulator_url, "unsubscribe", email, at, account=account_id)] = (
            "unsubscribed",
            email,
            at,
        )
    for kind, stored in (("spam", "spam_complaint"), ("bounce", "bounced"), ("resubscribe", "subscribed")):
        email = f"{kind}-{tag}@shop.io"
        at = now - timedelta(minutes=20)
        during[change_in_klaviyo(simulator_url, kind, email, at, account=account_id)] = (stored, email, at)
    sms_email = f"sms-{tag}@shop.io"
    at = now - timedelta(minutes=10)
    body = {
        "kind": "unsubscribe",
        "email": sms_email,
        "channel": "sms",
        "at": at.isoformat(),
        "account": account_id,
    }
    sms_id = httpx.post(f"{simulator_url}/__sim/consent-changes", json=body, timeout=10).json()["event_id"]

    pages_before = events_requests(simulator_url)
    # Two workers wake at once: the lease lets one poll; the other finds it busy.
    results = await asyncio.gather(poll_consent(poll_ctx), poll_consent(poll_ctx))
    assert sorted(r["status"] for r in results) == ["busy", "ok"], results
    assert events_requests(simulator_url) - pages_before >= 2  # the 230 came over several pages

    emails = {email for _, email, _ in during.values()} | {sms_email}
    rows = await ledger_for(sessionmaker, emails)
    assert len(rows) == len(during) + 1
    assert len({r.event_id for r in rows}) == len(rows)
    for row in rows:
        if row.event_id == sms_id:
            assert (row.kind, row.channel, row.metric) == (
                "unsubscribed",
                "sms",
                "Unsubscribed from SMS Marketing",
            )
            continue
        kind, email, at = during[row.event_id]
        assert (row.kind, row.email, row.source) == (kind, email, "poll")
        assert row.occurred_at.replace(tzinfo=UTC) == at
        assert row.profile_id

    # The next poll finds nothing new, and nothing was stored twice.
    again = await poll_consent(poll_ctx)
    assert again["status"] == "ok" and again["new"] == 0, again
    assert len(await ledger_for(sessionmaker, emails | emails_before)) == len(rows) + len(before)
    async with sessionmaker() as db:
        state = (await db.exec(select(ConsentPollState))).one()
    assert state.failures == 0 and state.last_success_at is not None
    assert set(state.metric_ids) >= {
        "Unsubscribed from Email Marketing",
        "Bounced Email",
        "Marked Email as Spam",
    }


async def test_a_failed_poll_keeps_its_mark_and_says_why(poll_ctx, sessionmaker):
    # A key Klaviyo refuses: nothing is read, the state says why, and the next good poll starts over.
    async with sessionmaker() as db:
        account = await get_account(db)
        db.add(account)
        await db.commit()
    broken = dict(
        poll_ctx, settings=poll_ctx["settings"].model_copy(update={"sandbox_url": "http://127.0.0.1:9"})
    )
    result = await poll_consent(broken)
    assert result["status"] == "failed"
    async with sessionmaker() as db:
        state = (await db.exec(select(ConsentPollState))).one()
    assert state.failures == 1 and "Could not read consent events" in (state.last_error or "")
    assert state.marks == {} and state.lease_owner is None
    assert SANDBOX_KEY  # the sandbox key is what a good poll uses
