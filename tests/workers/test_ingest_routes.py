"""One ingest endpoint for a whole tracking plan: each ecommerce-spec event posted through the API
lands in the simulator as Klaviyo's guide prescribes; an event without a route is kept, never
mapped by another event's mapping, and goes out once it is routed."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from sqlmodel import select

from models import IngestRecord, IngestSource
from services.accounts import get_account
from sync.presets import ecommerce_event_mapping
from tests.conftest import unique
from tests.support.ecommerce_spec import EXAMPLES, expected
from tests.support.ingest import make_source
from tests.support.runs import sim_settings
from tests.workers.test_ingest_forward import forward, post, sim_events, status_counts


@pytest.fixture
def fwd_settings(settings, simulator_url, tmp_path):
    return sim_settings(settings, simulator_url, tmp_path)


@pytest.fixture(autouse=True)
async def sandbox_account(sessionmaker):
    async with sessionmaker() as db:
        (await get_account(db)).sandbox = True
        await db.commit()


def as_person(call: dict[str, Any], email: str, **extra: Any) -> dict[str, Any]:
    """The documented call, made by a person of this test (the simulator is shared by the session,
    and merges profiles by external id)."""
    call = copy.deepcopy(call)
    call["context"] = {"traits": {"email": email}}
    call["userId"] = "user-" + email.partition("@")[0]
    call.update(extra)
    return call


def landed(simulator_url: str, metric: str, email: str) -> list[dict[str, Any]]:
    return [e for e in sim_events(simulator_url, metric) if e["profile"].get("email") == email]


async def records(sessionmaker, source_id: int) -> list[IngestRecord]:
    async with sessionmaker() as db:
        query = select(IngestRecord).where(IngestRecord.source_id == source_id).order_by(IngestRecord.id)
        return list((await db.exec(query)).all())


async def test_every_documented_spec_event_lands_as_the_guides_payload(
    client, sessionmaker, settings, fwd_settings, simulator_url, run_worker_burst
):
    from services import ingest_routes

    src, token, _, _ = await make_source(sessionmaker, settings, ecommerce_event_mapping("Product Viewed"))
    async with sessionmaker() as db:
        source = await db.get(IngestSource, src.id)
        assert await ingest_routes.route_whole_spec(db, source, None)
        await db.commit()
    email = f"{unique('spec').replace(' ', '')}@shop.test"
    answer = await post(client, src.id, token, [as_person(call, email) for call in EXAMPLES.values()])
    assert answer["accepted"] == len(EXAMPLES) and "unrouted" not in answer, answer
    await forward(run_worker_burst, fwd_settings)

    for event in EXAMPLES:
        for want in expected(event):
            got = [
                e for e in landed(simulator_url, want["metric"], email) if e["unique_id"] == want["unique_id"]
            ]
            assert len(got) == 1, f"{event}: {want['metric']} {want['unique_id']} did not land once"
            event_row = got[0]
            assert event_row["properties"] == want["properties"], event
            assert event_row["profile"]["external_id"] == "user-" + email.partition("@")[0]
            assert event_row["value"] == want.get("value"), event
            assert event_row["value_currency"] == want.get("value_currency"), event
            assert event_row["time"] == want["time"], event
            assert event_row["backfill"] is False
    assert await status_counts(sessionmaker, src.id) == {"sent": len(EXAMPLES)}


async def test_an_event_without_a_route_is_kept_unrouted_not_mis_mapped(
    client, sessionmaker, settings, fwd_settings, simulator_url, run_worker_burst, as_role
):
    """A source over the Product Added preset once took an Order Completed as an Added to Cart
    without value; now the order is kept unrouted until Order Completed is routed."""
    src, token, _, _ = await make_source(sessionmaker, settings, ecommerce_event_mapping("Product Added"))
    email = f"{unique('route').replace(' ', '')}@shop.test"
    order = {
        "event": "Order Completed", "userId": "user-" + email.partition("@")[0],
        "timestamp": "2026-11-30T10:00:00Z",
        "context": {"traits": {"email": email}},
        "properties": {"order_id": "R-1", "total": 99.99, "revenue": 90, "currency": "USD",
                       "products": [{"sku": "MUG", "name": "Mug", "price": 45, "quantity": 2}]},
    }  # fmt: skip
    added = as_person(EXAMPLES["Product Added"], email)
    answer = await post(client, src.id, token, [order, added])
    assert answer["accepted"] == 1
    assert answer["unrouted"] == 1 and answer["unrouted_events"] == [{"index": 0, "event": "Order Completed"}]
    await forward(run_worker_burst, fwd_settings)
    carts = landed(simulator_url, "Added to Cart", email)
    assert [e["unique_id"] for e in carts] == ["msg-add-1"]  # only the Product Added record
    assert landed(simulator_url, "Placed Order", email) == []
    assert await status_counts(sessionmaker, src.id) == {"sent": 1, "unrouted": 1}

    # The page counts it by name; routing the event sends the kept record.
    from models import Role
    from tests.support.web import post_form

    await as_role(Role.OPERATOR)
    page = await client.get(f"/ingest/{src.id}")
    assert page.status_code == 200 and 'data-unrouted="Order Completed"' in page.text
    from services import mappings as mapping_service

    async with sessionmaker() as db:
        mapping = await mapping_service.create_mapping(db, ecommerce_event_mapping("Order Completed"))
        await db.commit()
    routed = await post_form(
        client, f"/ingest/{src.id}/routes", {"event": "order completed", "mapping_id": str(mapping.id)}
    )
    assert routed.status_code in (200, 303), routed.text
    await forward(run_worker_burst, fwd_settings)
    placed = landed(simulator_url, "Placed Order", email)
    assert [(e["unique_id"], e["value"], e["value_currency"]) for e in placed] == [("R-1", 99.99, "USD")]
    assert [e["unique_id"] for e in landed(simulator_url, "Ordered Product", email)] == ["R-1_MUG"]
    assert await status_counts(sessionmaker, src.id) == {"sent": 2}


async def test_a_bad_phone_with_a_good_email_still_sends(
    client, sessionmaker, settings, fwd_settings, simulator_url, run_worker_burst
):
    src, token, _, _ = await make_source(sessionmaker, settings, ecommerce_event_mapping("Product Added"))
    email = f"{unique('phone').replace(' ', '')}@shop.test"
    call = as_person(EXAMPLES["Product Added"], email)
    call["context"]["traits"]["phone"] = "9112340375"
    answer = await post(client, src.id, token, call)
    assert (answer["accepted"], answer["rejected"]) == (1, 0), answer
    await forward(run_worker_burst, fwd_settings)
    (event,) = landed(simulator_url, "Added to Cart", email)
    assert "phone_number" not in event["profile"]


async def test_user_id_alone_sends_external_id_and_anonymous_id_alone_says_why(
    client, sessionmaker, settings, fwd_settings, simulator_url, run_worker_burst
):
    src, token, _, _ = await make_source(sessionmaker, settings, ecommerce_event_mapping("Product Viewed"))
    user = unique("user-").replace(" ", "")
    viewed = copy.deepcopy(EXAMPLES["Product Viewed"])
    del viewed["context"]
    known = viewed | {"userId": user, "messageId": f"{user}-1"}
    anonymous = {k: v for k, v in viewed.items() if k != "userId"} | {
        "anonymousId": "a-1",
        "messageId": f"{user}-2",
    }
    answer = await post(client, src.id, token, [known, anonymous])
    assert answer["accepted"] == 1 and answer["rejected"] == 1
    assert "anonymousId" in answer["errors"][0]["errors"][0]["message"]
    await forward(run_worker_burst, fwd_settings)
    events = [e for e in sim_events(simulator_url, "Viewed Product") if e["unique_id"] == f"{user}-1"]
    assert [e["profile"].get("external_id") for e in events] == [user]


async def test_a_returning_shoppers_second_checkout_is_not_dropped(
    client, sessionmaker, settings, fwd_settings, simulator_url, run_worker_burst
):
    src, token, _, _ = await make_source(sessionmaker, settings, ecommerce_event_mapping("Checkout Started"))
    email = f"{unique('checkout').replace(' ', '')}@shop.test"
    first = as_person(EXAMPLES["Checkout Started"], email)
    again = as_person(
        EXAMPLES["Checkout Started"], email, timestamp="2026-11-30T18:00:00Z", messageId="msg-checkout-2"
    )
    await post(client, src.id, token, [first, again])
    await forward(run_worker_burst, fwd_settings)
    assert len(landed(simulator_url, "Started Checkout", email)) == 2


async def test_the_sweep_lets_go_of_unrouted_records_past_retention(
    client, sessionmaker, settings, fwd_settings, redis_client
):
    from datetime import timedelta

    from sqlalchemy import update

    from models.base import utcnow
    from tests.workers.test_ingest_forward import sweep

    src, token, _, _ = await make_source(sessionmaker, settings, ecommerce_event_mapping("Product Added"))
    shipped = [{"event": "Order Shipped", "userId": "u-1", "n": n} for n in range(3)]
    assert (await post(client, src.id, token, shipped))["unrouted"] == 3
    old = (await records(sessionmaker, src.id))[0]
    async with sessionmaker() as db:
        await db.exec(
            update(IngestRecord)
            .where(IngestRecord.id == old.id)
            .values(received_at=utcnow() - timedelta(days=settings.ingest_retention_days + 1))
        )
        await db.commit()
    await redis_client.delete(f"{fwd_settings.queue_name}:ingest:pruned")  # prune on this sweep
    await sweep(fwd_settings)
    kept = await records(sessionmaker, src.id)
    assert len(kept) == 2 and old.id not in {r.id for r in kept}
    assert {r.status for r in kept} == {"unrouted"}


async def test_records_waiting_when_their_route_is_removed_are_kept_then_replayed(
    client, sessionmaker, settings, fwd_settings, simulator_url, run_worker_burst
):
    from services import ingest_routes

    src, token, _, mapping = await make_source(
        sessionmaker, settings, ecommerce_event_mapping("Product Added")
    )
    email = f"{unique('removed').replace(' ', '')}@shop.test"
    assert (await post(client, src.id, token, as_person(EXAMPLES["Product Added"], email)))["accepted"] == 1
    async with sessionmaker() as db:
        source = await db.get(IngestSource, src.id)
        ((route, _),) = await ingest_routes.list_routes(db, src.id)
        await ingest_routes.remove_route(db, source, route.id)
        await db.commit()
    await forward(run_worker_burst, fwd_settings)
    assert await status_counts(sessionmaker, src.id) == {"unrouted": 1}
    assert landed(simulator_url, "Added to Cart", email) == []
    async with sessionmaker() as db:
        source = await db.get(IngestSource, src.id)
        _, replayed = await ingest_routes.add_route(db, source, "Product Added", mapping.id)
        await db.commit()
    assert replayed == 1
    await forward(run_worker_burst, fwd_settings)
    assert len(landed(simulator_url, "Added to Cart", email)) == 1
    assert await status_counts(sessionmaker, src.id) == {"sent": 1}
