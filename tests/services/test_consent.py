"""The consent ledger on both backends: one row per Klaviyo event, ids in order, one poll at a time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete

from models import ConsentPollState
from models.db import make_engine, make_sessionmaker
from services import consent
from sync.consent import Change


async def test_ledger_and_poll_lease_on_both_backends(db_url):
    engine = make_engine(db_url)
    sessionmaker = make_sessionmaker(engine)
    tag = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    changes = [
        Change(
            f"{tag}-{i}", "unsubscribed", "email", "m", now - timedelta(minutes=i), email=f"p{i}-{tag}@x.io"
        )
        for i in range(3)
    ]
    try:
        async with sessionmaker() as db:
            assert await consent.record_changes(db, changes, "poll") == 3
            await db.commit()
        async with sessionmaker() as db:
            # The same events again (the other way in) and one new: only the new one is stored.
            again = [*changes[:2], Change(f"{tag}-9", "bounced", "email", "m", now, email=f"P0-{tag}@X.io")]
            assert await consent.record_changes(db, again, "webhook") == 1
            await db.commit()
            mine = [c for c in await consent.changes_after(db, 0, 10_000) if c.event_id.startswith(tag)]
            # Oldest first within a batch, so ids follow Klaviyo's order.
            assert [c.event_id for c in mine] == [f"{tag}-2", f"{tag}-1", f"{tag}-0", f"{tag}-9"]
            newest = await consent.latest_opt_outs(db, [f"p0-{tag}@x.io"])
            assert newest[f"p0-{tag}@x.io"].kind == "bounced"
            await db.exec(delete(ConsentPollState))  # type: ignore[call-overload]
            await db.commit()
        async with sessionmaker() as db:
            assert await consent.claim_poll(db, "first", timedelta(minutes=5)) is True
            assert await consent.claim_poll(db, "second", timedelta(minutes=5)) is False
    finally:
        await engine.dispose()
