"""The client, sender, retries and job polling over real HTTP against the Klaviyo simulator."""

from __future__ import annotations

import pytest

from klaviyo import endpoints as ep
from klaviyo.client import KlaviyoClient
from klaviyo.errors import AccessDenied, AuthError, Conflict, NotFound, ValidationFailed
from klaviyo.jobs import settle
from klaviyo.retry import AttemptStats, RetryPolicy
from klaviyo.sender import send_items
from klaviyo.serialization import dumps


def event(n: int, email: str | None = None, currency: str = "USD") -> dict:
    return {
        "type": "event-bulk-create",
        "attributes": {
            "profile": {
                "data": {"type": "profile", "attributes": {"email": email or f"u{n % 50}@shop.test"}}
            },
            "events": {
                "data": [
                    {
                        "type": "event",
                        "attributes": {
                            "properties": {"OrderId": str(n)},
                            "time": "2025-05-01T10:00:00+00:00",
                            "value": 10.5,
                            "value_currency": currency,
                            "unique_id": f"order-{n}",
                            "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
                        },
                    }
                ]
            },
            "backfill": True,
        },
    }


def stored(sim) -> list[dict]:
    return sim.state.events()


async def collect(client, endpoint, rows, **kwargs):
    return [o async for o in send_items(client, endpoint, rows, **kwargs)]


async def test_account_and_headers(client: KlaviyoClient) -> None:
    account = await client.get_account()
    assert account["attributes"]["preferred_currency"] == "USD"


async def test_one_bad_item_among_1000_is_a_row_error_and_999_land(client, sim) -> None:
    rows = [(n, event(n, currency="EURO" if n == 437 else "USD")) for n in range(1, 1001)]
    [outcome] = await collect(client, ep.BULK_EVENTS, rows)
    assert len(outcome.accepted) == 999 and 437 not in outcome.accepted
    [rejection] = outcome.rejected
    assert rejection.row_ref == 437
    assert rejection.pointer and "/data/436/" in rejection.pointer
    assert outcome.attempts == 2  # the rest was resent at once, not bisected
    assert len(stored(sim)) == 999


async def test_errors_without_pointers_are_bisected(client, sim) -> None:
    # Strip pointers from the simulator's answers so the sender has to find the bad items itself.
    app = sim.app
    original = app._api

    async def no_pointers(scope, receive, send):
        async def strip(message):
            if message["type"] == "http.response.body" and b'"source"' in message.get("body", b""):
                from klaviyo.serialization import dumps, loads

                doc = loads(message["body"])
                for err in doc.get("errors", []):
                    err.pop("source", None)
                message = {**message, "body": dumps(doc).ljust(len(message["body"]))}
            await send(message)

        await original(scope, receive, strip)

    app._api = no_pointers
    try:
        bad = {17, 611}
        rows = [(n, event(n, email="not-an-email" if n in bad else None)) for n in range(1, 1001)]
        [outcome] = await collect(client, ep.BULK_EVENTS, rows)
    finally:
        app._api = original
    assert sorted(r.row_ref for r in outcome.rejected) == sorted(bad)
    assert len(outcome.accepted) == 998
    assert outcome.attempts <= 2 * 2 * 10 + 1  # about two probes per level per bad item
    assert len(stored(sim)) == 998


async def test_400_is_not_retried(client, sim) -> None:
    stats = AttemptStats()
    body = ep.BULK_EVENTS.envelope_bytes([b'{"type":"event-bulk-create","attributes":{}}'])
    with pytest.raises(ValidationFailed):
        await client.send_bulk(ep.BULK_EVENTS, body, stats=stats)
    assert stats.attempts == 1


async def test_404_is_not_retried(client) -> None:
    stats = AttemptStats()
    with pytest.raises(NotFound):
        await client.request(
            ep.RENAME_LIST,
            path_params={"id": "nope"},
            body=b'{"data":{"type":"list","id":"nope","attributes":{"name":"x"}}}',
            stats=stats,
        )
    assert stats.attempts == 1


async def test_401_is_not_retried_and_repr_hides_the_key(sim, redis, prefix) -> None:
    async with KlaviyoClient("pk_unknown_key_000000000000", base_url=sim.base_url) as bad:
        stats = AttemptStats()
        with pytest.raises(AuthError) as caught:
            await bad.request(ep.GET_ACCOUNTS, stats=stats)
        assert stats.attempts == 1
        assert "pk_unknown_key" not in str(caught.value) and "pk_unknown_key" not in repr(bad)


async def test_5xx_and_malformed_answers_are_retried(sim) -> None:
    sim.config.faults.error_share = 0.5
    sim.config.faults.malformed_share = 0.2
    policy = RetryPolicy(max_attempts=30, base=0.01, cap=0.05)
    async with KlaviyoClient(sim.api_key, base_url=sim.base_url, retry=policy) as c:
        total = AttemptStats()
        for n in range(10):
            body = ep.BULK_EVENTS.envelope_bytes([dumps(event(n))])
            response = await c.send_bulk(ep.BULK_EVENTS, body, stats=total)
            assert response.status == 202
    assert total.attempts > 10
    faults = sim.state.snapshot_stats()["faults"]
    assert faults.get("malformed") and any(k.startswith("error_5") for k in faults)
    assert len(stored(sim)) == 10


async def test_retries_give_up_within_the_policy(sim, redis, prefix) -> None:
    sim.config.faults.error_share = 1.0
    policy = RetryPolicy(max_attempts=3, base=0.01, cap=0.02)
    async with KlaviyoClient(sim.api_key, base_url=sim.base_url, retry=policy) as c:
        stats = AttemptStats()
        with pytest.raises(Exception) as caught:
            await c.request(ep.GET_METRICS, stats=stats)
        assert stats.attempts == 3 and stats.last_status and stats.last_status >= 500
        assert type(caught.value).__name__ == "ServerError"


async def test_duplicate_profile_409_resolves_to_the_existing_profile(client, sim) -> None:
    owner = await client.import_profile({"email": "ana@shop.test"})
    stale = await client.import_profile({"phone_number": "+15005550006"})
    # Upserting by a (stale) id with an email another profile owns: Klaviyo answers 409 naming the
    # owner, and the client updates that profile instead.
    resolved = await client.import_profile({"email": "ana@shop.test", "first_name": "Ana"}, profile_id=stale)
    assert resolved == owner
    [profile] = [p for p in sim.state.profiles() if p.get("email") == "ana@shop.test"]
    assert profile["first_name"] == "Ana"
    # Two identifiers owned by two profiles cannot be merged by an upsert: the conflict surfaces.
    with pytest.raises(Conflict) as caught:
        await client.import_profile({"email": "ana@shop.test", "phone_number": "+15005550006"})
    assert caught.value.duplicate_profile_id in (owner, stale)


async def test_duplicate_profile_409_without_meta_is_resolved_by_lookup(client, sim) -> None:
    # Klaviyo documents no meta.duplicate_profile_id (create_or_update_profile lists no 409): the
    # client must not depend on it, so it looks the owner of the identifier up.
    sim.config.duplicate_profile_meta = False
    try:
        owner = await client.import_profile({"email": "bo@shop.test"})
        stale = await client.import_profile({"phone_number": "+15005550007"})
        resolved = await client.import_profile({"email": "Bo@shop.test", "last_name": "B"}, profile_id=stale)
    finally:
        sim.config.duplicate_profile_meta = True
    assert resolved == owner
    [profile] = [p for p in sim.state.profiles() if p["id"] == owner]
    assert profile["last_name"] == "B"


async def test_lists_pages_and_profile_count(client, sim) -> None:
    ids = [await client.create_list(f"List {i:02d}") for i in range(23)]
    seen = [lst["id"] async for lst in client.get_lists()]
    assert sorted(seen) == sorted(ids)  # 10 per page: three pages
    await client.rename_list(ids[0], "VIP")
    pid = await client.import_profile({"email": "vip@shop.test"})
    await client.add_list_members(ids[0], [pid])
    detail = await client.get_list(ids[0])
    assert detail["attributes"]["name"] == "VIP"
    assert detail["attributes"]["profile_count"] == 1
    await client.remove_list_members(ids[0], [pid])


async def test_metrics_after_events(client, sim) -> None:
    await client.bulk_create_events([event(1)])
    names = [m["attributes"]["name"] for m in await client.get_metrics()]
    assert "Placed Order" in names


async def test_profile_import_job_errors_map_to_rows(client, sim) -> None:
    rows = [
        (n, {"type": "profile", "attributes": {"email": "bad" if n == 3 else f"p{n}@shop.test"}})
        for n in range(1, 6)
    ]
    [outcome] = await collect(client, ep.BULK_PROFILES, rows)
    assert outcome.job_id
    outcome = await settle(client, ep.BULK_PROFILES, outcome, first_delay=0.02, max_delay=0.1)
    assert [r.row_ref for r in outcome.rejected] == [3]
    assert sorted(outcome.accepted) == [1, 2, 4, 5]


async def test_catalog_job_errors_map_to_rows(client, sim) -> None:
    def item(n: int) -> dict:
        return {
            "type": "catalog-item",
            "attributes": {
                "external_id": f"SKU-{n}",
                "title": f"Thing {n}",
                "description": "d",
                "url": f"https://shop.test/{n}",
                "integration_type": "$custom",
                "catalog_type": "$default",
            },
        }

    [first] = await collect(client, ep.CATALOG_ITEMS_CREATE, [(1, item(1)), (2, item(2))])
    await settle(client, ep.CATALOG_ITEMS_CREATE, first, first_delay=0.02, max_delay=0.1)
    [again] = await collect(client, ep.CATALOG_ITEMS_CREATE, [(10, item(3)), (11, item(2))])
    again = await settle(client, ep.CATALOG_ITEMS_CREATE, again, first_delay=0.02, max_delay=0.1)
    assert [(r.row_ref, r.code) for r in again.rejected] == [(11, "duplicate")]
    assert again.accepted == [10]
    names = [i["attributes"]["title"] async for i in client.iter_catalog_items()]
    assert sorted(names) == ["Thing 1", "Thing 2", "Thing 3"]


async def test_consent_endpoints(client, sim) -> None:
    lid = await client.create_list("Newsletter")
    sub = {
        "type": "profile",
        "attributes": {
            "email": "c@shop.test",
            "subscriptions": {
                "email": {"marketing": {"consent": "SUBSCRIBED", "consented_at": "2024-01-01T00:00:00Z"}}
            },
        },
    }
    await client.subscribe_profiles([sub], list_id=lid, historical_import=True)
    [profile] = [p for p in sim.state.profiles() if p.get("email") == "c@shop.test"]
    assert profile["subscriptions"]["email"]["marketing"]["consent"] == "SUBSCRIBED"
    [klist] = [x for x in sim.state.lists() if x["id"] == lid]
    assert profile["id"] in klist["members"]
    unsub = {
        "type": "profile",
        "attributes": {
            "email": "c@shop.test",
            "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}},
        },
    }
    await client.unsubscribe_profiles([unsub], list_id=lid)
    await client.suppress_profiles(["d@shop.test"])
    consent = sim.state.consent()
    unsubscribed = [(x.get("email"), x.get("list_id")) for x in consent["list_unsubscribes"]]
    assert unsubscribed == [("c@shop.test", lid)]
    assert [x.get("email") for x in consent["suppressions"]] == ["d@shop.test"]


async def test_revoked_key_mid_run_stops_cleanly(sim, redis, prefix) -> None:
    from klaviyo.limiter import RateLimiter

    key = "pk_revocable_key_1234567890"
    sim.config.add_key(key)
    limiter = RateLimiter(redis, prefix=prefix, time_scale=sim.config.time_scale)
    rows = [(n, event(n)) for n in range(1, 20_001)]
    outcomes = []
    async with KlaviyoClient(key, base_url=sim.base_url, limiter=limiter) as c:
        with pytest.raises(AccessDenied) as caught:
            async for outcome in send_items(c, ep.BULK_EVENTS, rows, max_items=500, concurrency=4):
                outcomes.append(outcome)
                if len(outcomes) == 3:
                    sim.config.revoke_key(key)
    assert "401" in str(caught.value) and key not in str(caught.value)
    stats = sim.state.snapshot_stats()
    refused = sum(codes.get("401", 0) for codes in stats["requests"].values())
    assert 1 <= refused <= 4  # at most the requests already in flight; nothing retried
    assert len(stored(sim)) == sum(len(o.accepted) for o in outcomes)


async def test_faults_end_with_every_event_delivered_exactly_once(client, sim) -> None:
    faults = sim.config.faults
    faults.error_share = 0.3
    faults.latency_min, faults.latency_max = 0.0, 0.05
    faults.drop_share = 0.05
    faults.drop_after_commit_share = 0.05
    faults.malformed_share = 0.05
    rows = [(n, event(n)) for n in range(1, 20_001)]
    outcomes = await collect(client, ep.BULK_EVENTS, rows, max_items=250, concurrency=6)
    assert sum(len(o.accepted) for o in outcomes) == 20_000
    assert not any(o.rejected for o in outcomes)
    events = stored(sim)
    assert len(events) == 20_000
    assert len({e["unique_id"] for e in events}) == 20_000
    assert sum(o.attempts for o in outcomes) > len(outcomes)  # faults were met and retried


async def test_429_storm_is_waited_out_together(client, sim) -> None:
    sim.config.start_storm(10)  # 10 simulated seconds = 0.5 s at 20x
    rows = [(n, event(n)) for n in range(1, 4001)]
    outcomes = await collect(client, ep.BULK_EVENTS, rows, max_items=250, concurrency=8)
    assert len(stored(sim)) == 4000
    r429 = sum(o.rate_limited for o in outcomes)
    # The shared pause makes every task wait out each Retry-After instead of hammering.
    assert 1 <= r429 <= 8 * 4


async def test_pacing_avoids_429s(client, sim) -> None:
    rows = [(n, event(n)) for n in range(1, 40 * 50 + 1)]
    outcomes = await collect(client, ep.BULK_EVENTS, rows, max_items=50, concurrency=8)
    assert len(outcomes) == 40
    assert sum(o.rate_limited for o in outcomes) == 0
    assert len(stored(sim)) == 2000


async def test_timeouts_are_network_errors_and_retried(sim) -> None:
    import httpx

    from klaviyo.errors import NetworkError

    sim.config.faults.latency_min = sim.config.faults.latency_max = 0.3
    policy = RetryPolicy(max_attempts=3, base=0.01, cap=0.02)
    async with KlaviyoClient(
        sim.api_key, base_url=sim.base_url, retry=policy, timeout=httpx.Timeout(0.1)
    ) as c:
        stats = AttemptStats()
        with pytest.raises(NetworkError):
            await c.request(ep.GET_METRICS, stats=stats)
        assert stats.attempts == 3


async def test_steady_window_headers_reveal_another_clients_use(client, sim) -> None:
    # As Klaviyo documents, every answer's RateLimit-* headers describe the steady window. Another
    # tool on the same account has spent 100 of the 150 bulk-event requests of this window; the
    # limiter learns that from the first answers and paces the rest instead of meeting 429s.
    import asyncio

    import httpx

    sim.config.limits_enabled = False  # the other tool's requests count, but none is refused
    async with httpx.AsyncClient(base_url=sim.base_url, headers=sim.headers()) as other:

        async def post(n: int) -> None:
            job = {
                "type": "event-bulk-create-job",
                "attributes": {"events-bulk-create": {"data": [event(n)]}},
            }
            answer = await other.post("/api/event-bulk-create-jobs", content=dumps({"data": job}))
            assert answer.status_code == 202, answer.text

        await asyncio.gather(*(post(1_000_000 + n) for n in range(100)))
    sim.config.limits_enabled = True
    # Answers take a while, so several requests are in flight when the window runs out.
    sim.config.faults.latency_min, sim.config.faults.latency_max = 0.05, 0.15
    rows = [(n, event(n)) for n in range(1, 200 * 10 + 1)]
    outcomes = await collect(client, ep.BULK_EVENTS, rows, max_items=10, concurrency=8)
    requests = sum(o.attempts for o in outcomes)
    r429 = sum(o.rate_limited for o in outcomes)
    assert r429 / requests < 0.01, (r429, requests)
    assert sum(len(o.accepted) for o in outcomes) == 2000 and len(stored(sim)) == 2100


async def test_import_profile_creates_then_updates_and_clears(client, sim) -> None:
    first = await client.import_profile({"email": "rt@shop.test", "first_name": "Ann", "last_name": "Lee"})
    [stored] = [p for p in sim.state.profiles() if p.get("email") == "rt@shop.test"]
    assert stored["id"] == first and stored["first_name"] == "Ann"
    # Same email: the same profile; a field left out is unchanged, a None clears it.
    again = await client.import_profile({"email": "rt@shop.test", "first_name": None, "title": "CTO"})
    [stored] = [p for p in sim.state.profiles() if p.get("email") == "rt@shop.test"]
    assert again == first
    assert "first_name" not in stored
    assert stored["last_name"] == "Lee" and stored["title"] == "CTO"
