"""Fault switches, the /__sim admin API, the async context manager and the subprocess runner."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from simulator.config import SimConfig
from simulator.server import SimulatorProcess, SimulatorServer, klaviyo_headers
from tests.simulator.payloads import bulk, event_item, profile_body

BULK = "/api/event-bulk-create-jobs"


@pytest.fixture(autouse=True)
def _no_limits(sim: SimulatorServer) -> None:
    sim.config.limits_enabled = False


def test_5xx_share_never_stores(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.faults.error_share = 0.5
    accepted = 0
    for i in range(40):
        r = client.post(BULK, json=bulk([event_item(unique_id=str(i))]))
        assert r.status_code in (202, 500, 502, 503, 504)
        if r.status_code >= 500:
            assert r.json()["errors"][0]["status"] == r.status_code
        else:
            accepted += 1
    assert 0 < accepted < 40
    assert len(sim.state.events()) == accepted
    faults = sim.state.snapshot_stats()["faults"]
    assert sum(n for k, n in faults.items() if k.startswith("error_")) == 40 - accepted


def test_latency(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.faults.latency_min = 0.05
    sim.config.faults.latency_max = 0.06
    started = time.perf_counter()
    assert client.get("/api/lists").status_code == 200
    assert time.perf_counter() - started >= 0.05


def test_dropped_connection_is_a_transport_error_and_stores_nothing(
    sim: SimulatorServer, client: httpx.Client
) -> None:
    sim.config.faults.drop_share = 1.0
    with pytest.raises(httpx.TransportError):
        client.post(BULK, json=bulk([event_item()]))
    assert sim.state.events() == []
    sim.config.faults.drop_share = 0.0
    # the client recovers on a new connection
    assert client.post(BULK, json=bulk([event_item()])).status_code == 202
    assert sim.state.snapshot_stats()["requests"]["POST /api/event-bulk-create-jobs"] == {"0": 1, "202": 1}


def test_drop_after_commit_stores_then_resend_dedups(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.faults.drop_after_commit_share = 1.0
    body = bulk([event_item(unique_id="o-1")])
    with pytest.raises(httpx.TransportError):
        client.post(BULK, json=body)
    assert len(sim.state.events()) == 1  # stored although the client never heard back
    sim.config.faults.drop_after_commit_share = 0.0
    assert client.post(BULK, json=body).status_code == 202  # at-least-once resend
    assert len(sim.state.events()) == 1
    assert sim.state.snapshot_stats()["duplicates"] == 1


def test_malformed_body_on_2xx(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.faults.malformed_share = 1.0
    r = client.post("/api/profile-import", json=profile_body(email="m@shop.io"))
    assert r.status_code == 201
    with pytest.raises(ValueError):
        orjson.loads(r.content)
    assert sim.state.profile(email="m@shop.io") is not None  # the 201 was true


def test_429_storm(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.time_scale = 10
    admin = httpx.Client(base_url=f"{sim.base_url}/__sim")
    admin.post("/config", json={"faults": {"storm_seconds": 2}})  # 0.2 s real
    r = client.get("/api/lists")
    assert r.status_code == 429
    assert 0 < float(r.headers["Retry-After"]) <= 0.2
    assert client.post(BULK, json=bulk([event_item()])).status_code == 429
    time.sleep(float(r.headers["Retry-After"]) + 0.02)
    assert client.get("/api/lists").status_code == 200
    assert sim.state.events() == []
    assert sim.state.snapshot_stats()["faults"]["storm"] == 2


def test_revoke_key_at_runtime(sim: SimulatorServer, client: httpx.Client) -> None:
    assert client.get("/api/lists").status_code == 200
    sim.config.revoke_key(sim.api_key)
    assert client.get("/api/lists").status_code == 401
    sim.config.add_key(sim.api_key)
    assert client.get("/api/lists").status_code == 200


def test_admin_api(sim: SimulatorServer, client: httpx.Client) -> None:
    admin = httpx.Client(base_url=f"{sim.base_url}/__sim")
    client.post(BULK, json=bulk([event_item(metric="A"), event_item(metric="B")]))
    client.post("/api/profile-import", json=profile_body(email="p@shop.io"))
    assert admin.get("/events", params={"metric": "B"}).json()["count"] == 1
    assert admin.get("/profiles", params={"email": "p@shop.io"}).json()["count"] == 1
    assert admin.get("/lists").json()["data"] == []
    assert admin.get("/catalog").json()["items"] == []
    stats = admin.get("/stats").json()
    assert stats["accepted"] == {"events": 2, "profiles_created": 1}
    assert stats["requests"]["POST /api/profile-import"] == {"201": 1}
    cfg = admin.post(
        "/config",
        json={
            "time_scale": 5,
            "limits": {"events": {"burst": 1, "steady": 2}},
            "faults": {"error_share": 0.1},
        },
    ).json()
    assert (cfg["time_scale"], cfg["limits"]["events"], cfg["faults"]["error_share"]) == (
        5,
        {"burst": 1, "steady": 2},
        0.1,
    )
    assert sim.config.time_scale == 5
    assert admin.post("/config", json={"nonsense": 1}).status_code == 400
    assert admin.post("/reset").json() == {"ok": True}
    assert admin.get("/events").json()["count"] == 0
    assert admin.get("/stats").json()["total_requests"] == 0


async def test_async_context_manager_and_accounts() -> None:
    from simulator.config import Account

    config = SimConfig(accounts={"pk_live_a": Account(id="A", timezone="America/New_York", currency="USD")})
    async with SimulatorServer(config) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        r = await client.get("/api/accounts", headers=klaviyo_headers("pk_live_a"))
        assert r.status_code == 200
        assert r.json()["data"][0]["attributes"]["timezone"] == "America/New_York"
        r = await client.get("/api/accounts", headers=klaviyo_headers())
        assert r.status_code == 401  # the sandbox key is not configured here


def test_subprocess_runner() -> None:
    with SimulatorProcess(time_scale=10, no_limits=True) as proc:
        r = httpx.post(f"{proc.base_url}{BULK}", json=bulk([event_item()]), headers=klaviyo_headers())
        assert r.status_code == 202
        with proc.admin() as admin:
            assert admin.get("/events").json()["count"] == 1
            assert admin.get("/config").json()["time_scale"] == 10
        assert proc.configure(faults={"error_share": 1.0})["faults"]["error_share"] == 1.0
        r = httpx.get(f"{proc.base_url}/api/lists", headers=klaviyo_headers())
        assert r.status_code >= 500
