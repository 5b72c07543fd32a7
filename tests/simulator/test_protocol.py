"""Auth, revision, JSON:API errors with pointers, size limits, rate limits and their headers."""

from __future__ import annotations

import time

import httpx
import orjson

from simulator.config import SANDBOX_KEY, Limit
from simulator.server import SimulatorServer, klaviyo_headers
from tests.simulator.payloads import bulk, event_item, single_event

BULK = "/api/event-bulk-create-jobs"


def test_missing_unknown_and_revoked_keys_get_401(sim: SimulatorServer, client: httpx.Client) -> None:
    no_auth = {k: v for k, v in klaviyo_headers().items() if k != "Authorization"}
    r = httpx.get(f"{sim.base_url}/api/accounts", headers=no_auth)
    assert r.status_code == 401
    assert r.json()["errors"][0]["code"] == "not_authenticated"

    r = httpx.get(f"{sim.base_url}/api/accounts", headers=klaviyo_headers("pk_nope"))
    assert r.status_code == 401
    assert r.json()["errors"][0]["code"] == "authentication_failed"

    r = httpx.get(f"{sim.base_url}/api/accounts", headers={**klaviyo_headers(), "Authorization": SANDBOX_KEY})
    assert r.status_code == 401

    admin = httpx.Client(base_url=f"{sim.base_url}/__sim")
    account = {
        "id": "ACC2",
        "name": "Second",
        "timezone": "Europe/Paris",
        "currency": "EUR",
        "public_key": "PUB2",
    }
    assert admin.post("/keys", json={"add": [{"key": "pk_second", "account": account}]}).status_code == 200
    r = httpx.get(f"{sim.base_url}/api/accounts", headers=klaviyo_headers("pk_second"))
    assert r.status_code == 200
    attrs = r.json()["data"][0]["attributes"]
    assert (attrs["timezone"], attrs["preferred_currency"], attrs["public_api_key"]) == (
        "Europe/Paris",
        "EUR",
        "PUB2",
    )

    admin.post("/keys", json={"revoke": ["pk_second"]})
    r = httpx.get(f"{sim.base_url}/api/accounts", headers=klaviyo_headers("pk_second"))
    assert r.status_code == 401


def test_sandbox_account_needs_no_setup(client: httpx.Client) -> None:
    r = client.get("/api/accounts")
    assert r.status_code == 200
    account = r.json()["data"][0]
    assert account["type"] == "account"
    assert {"timezone", "preferred_currency", "public_api_key"} <= set(account["attributes"])


def test_revision_header_is_required_and_dated(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.limits_enabled = False
    headers = {k: v for k, v in klaviyo_headers().items() if k != "revision"}
    r = httpx.get(f"{sim.base_url}/api/lists", headers=headers)
    assert r.status_code == 400
    assert "revision" in r.json()["errors"][0]["detail"]
    for revision, status in [
        ("2026-10-15", 200),
        ("2024-02-15", 200),
        ("2025-01-15.pre", 200),
        ("2027-01-15", 400),
        ("latest", 400),
    ]:
        r = client.get("/api/lists", headers={"revision": revision})
        assert r.status_code == status, revision


def test_error_shape_and_pointers_for_bad_bulk_items(sim: SimulatorServer, client: httpx.Client) -> None:
    items = [event_item(f"u{i}@shop.io", unique_id=str(i)) for i in range(5)]
    items[1]["attributes"]["profile"]["data"]["attributes"]["email"] = "not-an-email"
    items[3]["attributes"]["events"]["data"][0]["attributes"]["value"] = "12.50"
    items[4]["attributes"]["profile"]["data"]["attributes"] = {"phone_number": "0612345678"}
    r = client.post(BULK, json=bulk(items))
    assert r.status_code == 400
    errors = r.json()["errors"]
    for err in errors:
        assert set(err) >= {"id", "status", "code", "title", "detail", "source"}
    pointers = {e["source"]["pointer"] for e in errors}
    base = "/data/attributes/events-bulk-create/data"
    assert pointers == {
        f"{base}/3/attributes/events/data/0/attributes/value",
        f"{base}/1/attributes/profile/data/attributes/email",
        f"{base}/4/attributes/profile/data/attributes/phone_number",
    }
    # The whole request is refused: nothing stored.
    assert sim.state.events() == []


def test_event_rules(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.limits_enabled = False
    cases = [
        ({"time": "1989-12-31T23:59:59Z"}, "/data/attributes/time"),
        ({"time": "2099-01-01T00:00:00Z"}, "/data/attributes/time"),
        ({"value": "10"}, "/data/attributes/value"),
        ({"properties": {f"p{i}": i for i in range(401)}}, "/data/attributes/properties"),
        ({"properties": {"big": "x" * (100 * 1024 + 1)}}, "/data/attributes/properties/big"),
        (
            {"profile": {"data": {"type": "profile", "attributes": {}}}},
            "/data/attributes/profile/data/attributes",
        ),
        ({"metric": {"data": {"type": "metric"}}}, "/data/attributes/metric/data/attributes"),
    ]
    for attrs, pointer in cases:
        r = client.post("/api/events", json=single_event(**attrs))
        assert r.status_code == 400, attrs
        assert pointer in [e["source"]["pointer"] for e in r.json()["errors"]], r.json()
    ok = client.post("/api/events", json=single_event(properties={f"p{i}": i for i in range(400)}))
    assert ok.status_code == 202 and ok.content == b""
    assert len(sim.state.events()) == 1


def test_body_limits(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.limits_enabled = False
    huge = bulk([event_item(properties={"blob": "y" * 90_000}, unique_id=str(i)) for i in range(60)])
    r = client.post(BULK, json=huge)
    assert r.status_code == 413
    too_many = bulk([event_item(f"u{i}@shop.io") for i in range(1001)])
    r = client.post(BULK, json=too_many)
    assert r.status_code == 400
    assert r.json()["errors"][0]["source"]["pointer"] == "/data/attributes/events-bulk-create/data"
    r = client.post(BULK, content=b'{"data": ')
    assert r.status_code == 400
    assert sim.state.events() == []


def test_rate_limit_429_with_scaled_retry_after_and_headers(
    sim: SimulatorServer, client: httpx.Client
) -> None:
    sim.config.time_scale = 10
    sim.config.limits["events_bulk"] = Limit(burst=2, steady=50)
    sim.reset()
    body = bulk([event_item()])
    first = client.post(BULK, json=body)
    assert first.status_code == 202
    # Klaviyo's guide: a non-429 answer's RateLimit-* headers describe the steady window.
    assert first.headers["RateLimit-Limit"] == "50, 50;w=6"
    assert first.headers["RateLimit-Remaining"] == "49"
    assert 0 < float(first.headers["RateLimit-Reset"]) <= 6
    # The 100 ms burst window may roll over between requests; keep sending until refused.
    limited = first
    for _ in range(20):
        limited = client.post(BULK, json=body)
        if limited.status_code == 429:
            break
    assert limited.status_code == 429
    assert limited.json()["errors"][0]["code"] == "throttled"
    retry = float(limited.headers["Retry-After"])
    assert 0 < retry <= 0.1
    # ...and a 429 carries only Retry-After.
    assert not {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} & set(limited.headers)
    time.sleep(retry + 0.01)
    assert client.post(BULK, json=body).status_code == 202
    stats = sim.state.snapshot_stats()
    assert stats["rate_limited"] >= 1
    assert stats["requests"]["POST /api/event-bulk-create-jobs"]["429"] >= 1


def test_steady_window_and_unscaled_retry_after(sim: SimulatorServer, client: httpx.Client) -> None:
    # GET /api/accounts is 1/s: the second call in the same second is refused with whole seconds.
    r1 = client.get("/api/accounts")
    r2 = client.get("/api/accounts")
    if r1.status_code == 200 and r2.status_code == 200:  # crossed a second boundary; try again
        r2 = client.get("/api/accounts")
    assert r2.status_code == 429
    assert r2.headers["Retry-After"] == "1"
    assert r1.headers["RateLimit-Limit"] == "15, 15;w=60"

    sim.config.time_scale = 100
    sim.config.limits["metrics"] = Limit(burst=100, steady=3)
    sim.reset()
    codes = [client.get("/api/metrics").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]


def test_limits_are_per_account_and_class_and_can_be_disabled(
    sim: SimulatorServer, client: httpx.Client
) -> None:
    # One per minute, not one per second: a loaded machine may cross a second boundary between posts.
    sim.config.limits["events"] = Limit(burst=1, steady=1)
    sim.config.add_key("pk_other", account=None)
    from simulator.config import Account

    sim.config.add_key("pk_third", Account(id="ACC3"))
    assert client.post("/api/events", json=single_event()).status_code == 202
    assert client.post("/api/events", json=single_event(email="b@shop.io")).status_code == 429
    # another class of the same account is unaffected
    assert client.get("/api/lists").status_code == 200
    # another account has its own windows
    other = client.post(
        "/api/events", json=single_event(), headers={"Authorization": "Klaviyo-API-Key pk_third"}
    )
    assert other.status_code == 202
    sim.config.limits_enabled = False
    for _ in range(5):
        r = client.post("/api/events", json=single_event(email="c@shop.io", unique_id=str(time.time())))
        assert r.status_code == 202
        assert "RateLimit-Limit" in r.headers


def test_every_answered_request_carries_rate_limit_headers(client: httpx.Client) -> None:
    for r in [
        client.get("/api/lists"),
        client.get("/api/lists/nope"),
        client.post("/api/lists", json={"data": {"type": "list"}}),
        client.post("/api/events", json=single_event()),
    ]:
        assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"} <= set(r.headers), r.status_code
    assert client.get("/api/lists/nope").status_code == 404


def test_unknown_path_and_method(client: httpx.Client) -> None:
    assert client.get("/api/nothing-here").status_code == 404
    assert client.put("/api/lists").status_code == 405


def test_fast_bulk_of_1000(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.limits_enabled = False
    body = orjson.dumps(bulk([event_item(f"u{i}@shop.io", unique_id=f"o{i}") for i in range(1000)]))
    client.post(BULK, content=body)  # warm up
    started = time.perf_counter()
    r = client.post(BULK, content=body.replace(b'"o', b'"p'))
    elapsed = time.perf_counter() - started
    assert r.status_code == 202
    assert len(sim.state.events()) == 2000
    assert elapsed < 0.5  # round trip incl. client; server-side time is measured in the benchmark
