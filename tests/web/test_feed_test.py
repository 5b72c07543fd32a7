"""'Test feed' on the schedule form, and the save refused while the mapping does not fit the feed."""

from __future__ import annotations

import uuid

from sqlmodel import select

from models import Role, Schedule
from sync.mapping import DateParse, Email, NumberCast, Target, TargetKind, column
from sync.mapping import Mapping as Spec
from tests.support.feed_server import feed_server, order
from tests.support.runs import make_mapping
from tests.support.web import post_form


async def test_test_feed_shows_records_and_refuses_a_mapping_the_feed_cannot_fill(
    client, as_role, sessionmaker
):
    """The form's "Test feed": first page, detected records path, fields, samples; then the save
    is refused while the mapping needs a time the records lack, and allowed once the operator
    chooses to time records when received (which the schedule page then states)."""
    tag = uuid.uuid4().hex[:6]
    spec = Spec(
        name=f"needs created_at {tag}",
        target=Target(kind=TargetKind.EVENT, metric=f"Feed Test {tag}"),
        fields=[
            column("email", "email", Email()),
            column("created_at", "time", DateParse()),
            column("total", "value", NumberCast()),
            column("coupon", "properties.Coupon"),
        ],
    )
    mapping = await make_mapping(sessionmaker, spec)
    with feed_server() as feed:
        feed.state.orders = [order(n, f"2026-01-0{n}T10:00:00Z", tag) for n in range(1, 4)]
        await as_role(Role.OPERATOR)
        form = {
            "name": f"orders {tag}",
            "mapping_id": str(mapping.id),
            "url": f"{feed.url}/orders.json",
            "format": "json",
            "records_path": "",
            "cursor_kind": "none",
            "timing": "interval",
            "interval_minutes": "60",
            "retry_limit": "5",
        }
        tested = await post_form(client, "/schedules/test-feed", form)
        assert tested.status_code == 200, tested.text
        text = tested.text
        assert 'data-testid="feed-test-path">orders</code> (detected' in text
        assert 'id="records-path"' in text and 'value="orders"' in text
        assert "order_id" in text and f"{tag}-1" in text  # fields and a sample record
        assert 'data-testid="feed-test-refused"' in text
        assert "the time of each event (time) reads &#39;created_at&#39;, which no record has" in text
        assert "properties.Coupon: no record has &#39;coupon&#39;" in text  # optional: a warning

        refused = await post_form(
            client, "/schedules/", {**form, "records_path": "orders"}, follow_redirects=False
        )
        assert refused.status_code == 400 and "which no record has" in refused.text
        async with sessionmaker() as db:
            assert (await db.exec(select(Schedule).where(Schedule.name == form["name"]))).first() is None

        chosen = {**form, "records_path": "orders", "use_received_time": "1"}
        saved = await post_form(client, "/schedules/", chosen, follow_redirects=False)
        assert saved.status_code == 303, saved.text
        page = (await client.get(saved.headers["location"])).text
        assert 'data-testid="received-time"' in page
