"""The signed outbound webhook to the store: through the outbound-URL guard, retried with backoff,
never dropped, in order; every attempt in the delivery ledger."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from sqlmodel import col, select

from models import ConsentDelivery, ConsentIntegration
from services import consent
from sync import outbound
from sync.consent import Change
from tests.conftest import REDIS_URL
from tests.support.receiver import receiver
from workers.consent import deliver_consent


@pytest.fixture
async def deliver_ctx(settings, sessionmaker) -> AsyncIterator[dict[str, Any]]:
    redis = ArqRedis.from_url(REDIS_URL)
    redis.default_queue_name = settings.queue_name
    guarded = outbound.client(settings.outbound_allow_list, timeout=httpx.Timeout(5.0))
    yield {
        # Pauses between retries shrink with the time scale (2 s doubling becomes 2 ms doubling).
        "settings": settings.model_copy(update={"klaviyo_time_scale": 1000.0}),
        "sessionmaker": sessionmaker,
        "redis": redis,
        "outbound_http": guarded,
    }
    await guarded.aclose()
    await redis.aclose()


def _changes(tag: str, n: int, start: int = 0) -> list[Change]:
    base = datetime.now(UTC) - timedelta(minutes=10)
    return [
        Change(
            event_id=f"{tag}-{i:03d}",
            kind="unsubscribed" if i % 3 else "bounced",
            channel="email",
            metric="Unsubscribed from Email Marketing" if i % 3 else "Bounced Email",
            occurred_at=base + timedelta(seconds=i),
            email=f"p{i}-{tag}@shop.io",
        )
        for i in range(start, start + n)
    ]


async def test_a_receiver_failing_five_times_then_working_gets_every_change_once_in_order(
    deliver_ctx, settings, sessionmaker
):
    tag = uuid.uuid4().hex[:8]
    with receiver() as (url, got):
        async with sessionmaker() as db:
            row, _, secret = await consent.create_integration(db, settings, f"store {tag}", url, None)
            await db.commit()
        assert secret is not None
        async with sessionmaker() as db:
            await consent.record_changes(db, _changes(tag, 150), "poll")
            await db.commit()
        got.fail_next = 5
        for _ in range(200):
            await deliver_consent(deliver_ctx)
            async with sessionmaker() as db:
                current = await db.get(ConsentIntegration, row.id)
                assert current is not None
                if current.attempts == 3:
                    # More changes arrive while the store is down: they queue behind the others.
                    await consent.record_changes(db, _changes(tag, 30, start=150), "webhook")
                    await db.commit()
                if await consent.pending_count(db, current) == 0 and got.fail_next == 0:
                    break
            await asyncio.sleep(0.01)
        posts = list(got.posts)

    assert [p["ok"] for p in posts[:5]] == [False] * 5
    delivered = [c for p in posts if p["ok"] for c in json.loads(p["body"])["changes"]]
    assert [c["event_id"] for c in delivered] == [f"{tag}-{i:03d}" for i in range(180)]
    assert [c["id"] for c in delivered] == sorted(c["id"] for c in delivered)
    for post in posts:
        # Signed: sha256 HMAC of "<timestamp>.<body>" with the integration's secret.
        stamp = post["headers"]["X-Consent-Timestamp"]
        expected = hmac.new(secret.encode(), stamp.encode() + b"." + post["body"], hashlib.sha256).hexdigest()
        assert post["headers"]["X-Consent-Signature"] == f"sha256={expected}"

    async with sessionmaker() as db:
        query = (
            select(ConsentDelivery)
            .where(ConsentDelivery.integration_id == row.id)
            .order_by(col(ConsentDelivery.id))
        )
        ledger = list((await db.exec(query)).all())
        final = await db.get(ConsentIntegration, row.id)
    # Attempts count per batch: the first batch went through on its 6th try, the next on its 1st.
    assert [(d.attempt, d.ok) for d in ledger[:7]] == [(n, n == 6) for n in range(1, 7)] + [(1, True)]
    assert all(d.status_code == 500 and d.error for d in ledger[:5])
    assert sum(d.count for d in ledger if d.ok) == 180
    assert final is not None and final.attempts == 0 and final.last_error is None


async def test_store_webhook_urls_go_through_the_outbound_guard(settings, sessionmaker):
    async with sessionmaker() as db:
        with pytest.raises(consent.ConsentError, match="private address"):
            await consent.create_integration(
                db, settings, f"x {uuid.uuid4().hex[:6]}", "http://10.1.2.3/hook", None
            )
        with pytest.raises(consent.ConsentError, match="http:// or https://"):
            await consent.create_integration(
                db, settings, f"y {uuid.uuid4().hex[:6]}", "ftp://shop.io/x", None
            )
