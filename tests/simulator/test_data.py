"""What the simulator stores: events and dedup, profiles, jobs, lists, consent, metrics, catalog."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from simulator.server import SimulatorServer
from tests.simulator.payloads import bulk, event_item, profile_body, single_event

BULK = "/api/event-bulk-create-jobs"


@pytest.fixture(autouse=True)
def _fast(sim: SimulatorServer) -> None:
    # Data tests are not about rate limits; jobs finish in ~15 ms.
    sim.config.limits_enabled = False
    sim.config.time_scale = 100


def test_events_are_stored_exactly(sim: SimulatorServer, client: httpx.Client) -> None:
    item = event_item(
        "Ann@Shop.io", unique_id="o-1", properties={"Items": [{"sku": "A"}], "ItemNames": ["a"]}
    )
    item["attributes"]["backfill"] = True
    assert client.post(BULK, json=bulk([item])).status_code == 202
    [event] = sim.state.events(metric="Placed Order")
    assert event["profile"]["email"] == "Ann@Shop.io"
    assert event["properties"] == {"Items": [{"sku": "A"}], "ItemNames": ["a"]}
    assert (event["time"], event["datetime"]) == ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05+00:00")
    assert (event["value"], event["value_currency"], event["unique_id"], event["backfill"]) == (
        12.5,
        "USD",
        "o-1",
        True,
    )
    # events create the profile and the metric
    assert sim.state.profile(email="ann@shop.io")["id"] == event["profile_id"]
    assert [m["name"] for m in sim.state.metrics()] == ["Placed Order"]
    over_http = httpx.get(f"{sim.base_url}/__sim/events", params={"metric": "Placed Order"}).json()
    assert over_http["count"] == 1 and over_http["data"][0]["unique_id"] == "o-1"


def test_dedup_by_unique_id_and_by_second(sim: SimulatorServer, client: httpx.Client) -> None:
    items = [
        event_item(unique_id="o-1"),
        event_item(unique_id="o-1", value=99),  # same profile + metric + unique_id: dropped
        event_item(unique_id="o-1", metric="Fulfilled Order"),  # other metric: kept
        event_item("bob@shop.io", unique_id="o-1"),  # other profile: kept
    ]
    assert client.post(BULK, json=bulk(items)).status_code == 202
    # A resend of the same batch (at-least-once delivery) stores nothing new.
    assert client.post(BULK, json=bulk(items)).status_code == 202
    assert len(sim.state.events()) == 3
    no_id = [
        event_item(time="2024-05-01T10:00:00.100Z"),
        event_item(time="2024-05-01T10:00:00.900Z"),  # same second: collapses
        event_item(time="2024-05-01T10:00:01Z"),
    ]
    assert client.post(BULK, json=bulk(no_id)).status_code == 202
    assert len(sim.state.events()) == 5
    stats = sim.state.snapshot_stats()
    assert stats["duplicates"] == 6  # 1 in the first batch, 4 in the resend, 1 in the same second
    assert stats["accepted"]["events"] == 5


def test_example_com_is_accepted_but_dropped(sim: SimulatorServer, client: httpx.Client) -> None:
    assert client.post(BULK, json=bulk([event_item("x@example.com")])).status_code == 202
    assert client.post("/api/events", json=single_event("y@EXAMPLE.com")).status_code == 202
    r = client.post("/api/profile-import", json=profile_body(email="z@example.com"))
    assert r.status_code == 201
    assert sim.state.events() == []
    assert sim.state.profiles() == []
    assert sim.state.snapshot_stats()["dropped_example_com"] == 3


def test_metric_limit(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.accounts[sim.api_key].metric_limit = 2
    ok = bulk([event_item(metric="A"), event_item(metric="B"), event_item(metric="A", unique_id="2")])
    assert client.post(BULK, json=ok).status_code == 202
    r = client.post(BULK, json=bulk([event_item(metric="A", unique_id="3"), event_item(metric="C")]))
    assert r.status_code == 400
    [err] = r.json()["errors"]
    assert err["source"]["pointer"].startswith("/data/attributes/events-bulk-create/data/1/")
    assert "limit" in err["detail"]
    assert len(sim.state.events()) == 3  # the refused request stored nothing
    metrics = client.get("/api/metrics").json()
    assert sorted(m["attributes"]["name"] for m in metrics["data"]) == ["A", "B"]


def test_profile_import_upsert_and_conflict(sim: SimulatorServer, client: httpx.Client) -> None:
    r = client.post(
        "/api/profile-import", json=profile_body(email="ann@shop.io", first_name="Ann", last_name="L")
    )
    assert r.status_code == 201
    ann = r.json()["data"]
    r = client.post(
        "/api/profile-import", json=profile_body(email="ann@shop.io", first_name="Anne", last_name=None)
    )
    assert r.status_code == 200
    attrs = r.json()["data"]["attributes"]
    assert (attrs["first_name"], attrs["last_name"]) == ("Anne", None)  # null clears, omitted stays
    bob = client.post("/api/profile-import", json=profile_body(phone_number="+14155550100")).json()["data"]
    # Ann's update would take Bob's phone number: 409 naming Bob.
    r = client.post(
        "/api/profile-import", json=profile_body(email="ann@shop.io", phone_number="+14155550100")
    )
    assert r.status_code == 409
    err = r.json()["errors"][0]
    assert err["code"] == "duplicate_profile"
    assert err["meta"]["duplicate_profile_id"] == bob["id"]
    r = client.patch(
        f"/api/profiles/{ann['id']}",
        json={"data": {"type": "profile", "id": ann["id"], "attributes": {"phone_number": "+14155550100"}}},
    )
    assert r.status_code == 409
    r = client.patch(
        f"/api/profiles/{ann['id']}",
        json={"data": {"type": "profile", "id": ann["id"], "attributes": {"properties": {"tier": "gold"}}}},
    )
    assert r.status_code == 200 and r.json()["data"]["attributes"]["properties"] == {"tier": "gold"}
    for bad, pointer in [
        ({"email": "nope"}, "/data/attributes/email"),
        ({"phone_number": "555-0100"}, "/data/attributes/phone_number"),
        ({"first_name": "No Id"}, "/data/attributes"),
    ]:
        r = client.post("/api/profile-import", json=profile_body(**bad))
        assert r.status_code == 400 and r.json()["errors"][0]["source"]["pointer"] == pointer
    found = client.get("/api/profiles", params={"filter": 'equals(email,"ANN@shop.io")'}).json()["data"]
    assert [p["id"] for p in found] == [ann["id"]]
    assert client.get("/api/profiles", params={"filter": 'equals(email,"none@shop.io")'}).json()["data"] == []


def _import_job(profiles: list[dict[str, Any]], list_id: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "profile-bulk-import-job",
        "attributes": {"profiles": {"data": [{"type": "profile", "attributes": p} for p in profiles]}},
    }
    if list_id:
        data["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
    return {"data": data}


def _new_list(client: httpx.Client, name: str = "VIP", opt_in: str = "single_opt_in") -> str:
    r = client.post(
        "/api/lists", json={"data": {"type": "list", "attributes": {"name": name, "opt_in_process": opt_in}}}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


def test_profile_bulk_import_job_lifecycle(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.time_scale = 10  # queued 50 ms, processing 100 ms
    list_id = _new_list(client)
    profiles = [
        {"email": "a@shop.io"},
        {"email": "broken"},
        {"phone_number": "0612345678"},
        {"first_name": "nobody"},
        {"email": "b@shop.io", "phone_number": "+33612345678"},
    ]
    r = client.post("/api/profile-bulk-import-jobs", json=_import_job(profiles, list_id))
    assert r.status_code == 202
    job = r.json()["data"]
    assert job["attributes"]["status"] == "queued"
    seen = {job["attributes"]["status"]}
    deadline = time.monotonic() + 3
    while job["attributes"]["status"] != "complete" and time.monotonic() < deadline:
        time.sleep(0.01)
        job = client.get(f"/api/profile-bulk-import-jobs/{job['id']}").json()["data"]
        seen.add(job["attributes"]["status"])
    assert seen == {"queued", "processing", "complete"}
    attrs = job["attributes"]
    assert (attrs["total_count"], attrs["completed_count"], attrs["failed_count"]) == (5, 2, 3)
    page1 = client.get(
        f"/api/profile-bulk-import-jobs/{job['id']}/import-errors", params={"page[size]": 2}
    ).json()
    assert len(page1["data"]) == 2 and page1["links"]["next"]
    page2 = client.get(page1["links"]["next"]).json()
    errors = page1["data"] + page2["data"]
    assert "next" not in page2["links"]  # the spec types it as a URI string: absent on the last page
    pointers = sorted(e["attributes"]["source"]["pointer"] for e in errors)
    assert pointers == [
        "/data/attributes/profiles/data/1/attributes/email",
        "/data/attributes/profiles/data/2/attributes/phone_number",
        "/data/attributes/profiles/data/3/attributes",
    ]
    assert errors[0]["type"] == "import-error"
    assert {p["email"] for p in sim.state.profiles()} == {"a@shop.io", "b@shop.io"}
    [klist] = sim.state.lists()
    assert klist["profile_count"] == 2


def test_lists_pagination_and_daily_limit(sim: SimulatorServer, client: httpx.Client) -> None:
    ids = [_new_list(client, f"List {i:02}") for i in range(23)]
    seen: list[str] = []
    url: str | None = "/api/lists"
    pages = 0
    while url:
        body = client.get(url).json()
        assert len(body["data"]) <= 10
        seen += [item["id"] for item in body["data"]]
        url = body["links"].get("next")
        pages += 1
        if url:
            assert "page%5Bcursor%5D=" in url or "page[cursor]=" in url
            assert url.startswith(sim.base_url)
    assert (pages, seen) == (3, ids)
    sim.config.list_create_daily_limit = 24
    _new_list(client, "last one")
    r = client.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": "too many"}}})
    assert r.status_code == 429
    assert "per day" in r.json()["errors"][0]["detail"]
    assert float(r.headers["Retry-After"]) > 0
    r = client.patch(
        f"/api/lists/{ids[0]}",
        json={"data": {"type": "list", "id": ids[0], "attributes": {"name": "Renamed"}}},
    )
    assert r.status_code == 200 and r.json()["data"]["attributes"]["name"] == "Renamed"


def test_list_profile_count_has_its_own_low_limit(sim: SimulatorServer, client: httpx.Client) -> None:
    list_id = _new_list(client)
    # Counting ran while limits were off, but this class has not been used yet.
    sim.config.limits_enabled = True
    sim.config.time_scale = 1
    params = {"additional-fields[list]": "profile_count"}
    first = client.get(f"/api/lists/{list_id}", params=params)
    assert first.status_code == 200 and first.json()["data"]["attributes"]["profile_count"] == 0
    assert first.headers["RateLimit-Limit"] == "15, 15;w=60"
    second = client.get(f"/api/lists/{list_id}", params=params)
    assert second.status_code == 429
    plain = client.get(f"/api/lists/{list_id}")
    assert plain.status_code == 200 and "profile_count" not in plain.json()["data"]["attributes"]


def test_list_membership(sim: SimulatorServer, client: httpx.Client) -> None:
    list_id = _new_list(client)
    pids = [
        client.post("/api/profile-import", json=profile_body(email=f"m{i}@shop.io")).json()["data"]["id"]
        for i in range(3)
    ]
    url = f"/api/lists/{list_id}/relationships/profiles"
    assert client.post(url, json={"data": [{"type": "profile", "id": p} for p in pids]}).status_code == 204
    assert [x["id"] for x in client.get(url).json()["data"]] == pids
    r = client.request("DELETE", url, json={"data": [{"type": "profile", "id": pids[0]}]})
    assert r.status_code == 204
    r = client.post(url, json={"data": [{"type": "profile", "id": "missing"}]})
    assert r.status_code == 400 and r.json()["errors"][0]["source"]["pointer"] == "/data/0/id"
    r = client.post(url, json={"data": [{"type": "profile", "id": pids[0]}] * 1001})
    assert r.status_code == 400
    assert sim.state.lists()[0]["members"] == pids[1:]
    profile = sim.state.profile(email="m1@shop.io")
    assert profile["subscriptions"] == {}  # adding to a list does not change consent


def test_list_members_filtered_by_email_or_phone(sim: SimulatorServer, client: httpx.Client) -> None:
    list_id = _new_list(client)
    pids = [
        client.post(
            "/api/profile-import", json=profile_body(email=f"f{i}@shop.io", phone_number=f"+1202555{i:04d}")
        ).json()["data"]["id"]
        for i in range(3)
    ]
    url = f"/api/lists/{list_id}/relationships/profiles"
    assert (
        client.post(url, json={"data": [{"type": "profile", "id": p} for p in pids[:2]]}).status_code == 204
    )
    wanted = 'any(email,["F0@shop.io","f2@shop.io","nobody@shop.io"])'
    ids = client.get(url, params={"filter": wanted, "page[size]": 100}).json()["data"]
    assert [x["id"] for x in ids] == [pids[0]]  # f2 exists but is not a member
    profiles = client.get(
        f"/api/lists/{list_id}/profiles", params={"filter": 'equals(phone_number,"+12025550001")'}
    )
    assert [(p["id"], p["attributes"]["email"]) for p in profiles.json()["data"]] == [(pids[1], "f1@shop.io")]
    # Klaviyo's rules: at most 100 per page, and only email / phone_number filters on a list.
    assert client.get(url, params={"page[size]": 1000}).status_code == 400
    assert client.get(url, params={"filter": f'equals(id,"{pids[0]}")'}).status_code == 400


def _subscribe(
    emails: list[str], list_id: str | None, historical: bool = False, consented_at: str | None = None
) -> dict[str, Any]:
    marketing: dict[str, Any] = {"consent": "SUBSCRIBED"}
    if consented_at:
        marketing["consented_at"] = consented_at
    data: dict[str, Any] = {
        "type": "profile-subscription-bulk-create-job",
        "attributes": {
            "profiles": {
                "data": [
                    {
                        "type": "profile",
                        "attributes": {"email": e, "subscriptions": {"email": {"marketing": marketing}}},
                    }
                    for e in emails
                ]
            },
            "historical_import": historical,
        },
    }
    if list_id:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def test_single_and_double_opt_in(sim: SimulatorServer, client: httpx.Client) -> None:
    single = _new_list(client, "Single", "single_opt_in")
    double = _new_list(client, "Double", "double_opt_in")
    url = "/api/profile-subscription-bulk-create-jobs"
    assert client.post(url, json=_subscribe(["s@shop.io"], single)).status_code == 202
    assert client.post(url, json=_subscribe(["d@shop.io"], double)).status_code == 202
    s = sim.state.profile(email="s@shop.io")
    d = sim.state.profile(email="d@shop.io")
    assert s["subscriptions"]["email"]["marketing"]["consent"] == "SUBSCRIBED"
    assert d["subscriptions"]["email"]["marketing"]["consent"] == "PENDING"
    lists = {kl["name"]: kl["members"] for kl in sim.state.lists()}
    assert lists == {"Single": [s["id"]], "Double": []}
    assert [p["email"] for p in sim.state.consent()["pending_opt_ins"]] == ["d@shop.io"]
    # the operator confirms by email (simulated through the admin API)
    assert httpx.post(f"{sim.base_url}/__sim/opt-ins/confirm").json() == {"confirmed": 1}
    assert (
        sim.state.profile(email="d@shop.io")["subscriptions"]["email"]["marketing"]["consent"] == "SUBSCRIBED"
    )
    assert {kl["name"]: kl["members"] for kl in sim.state.lists()}["Double"] == [d["id"]]
    # historical import needs consented_at in the past, and then skips double opt-in
    r = client.post(url, json=_subscribe(["h@shop.io"], double, historical=True))
    assert r.status_code == 400
    assert r.json()["errors"][0]["source"]["pointer"].endswith("/subscriptions/email/marketing/consented_at")
    r = client.post(
        url, json=_subscribe(["h@shop.io"], double, historical=True, consented_at="2099-01-01T00:00:00Z")
    )
    assert r.status_code == 400
    r = client.post(
        url, json=_subscribe(["h@shop.io"], double, historical=True, consented_at="2023-01-01T00:00:00Z")
    )
    assert r.status_code == 202
    h = sim.state.profile(email="h@shop.io")
    assert h["subscriptions"]["email"]["marketing"]["consent"] == "SUBSCRIBED"
    assert h["id"] in {kl["name"]: kl["members"] for kl in sim.state.lists()}["Double"]


def _unsubscribe(emails: list[str], list_id: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "profile-subscription-bulk-delete-job",
        "attributes": {
            "profiles": {
                "data": [
                    {
                        "type": "profile",
                        "attributes": {
                            "email": e,
                            "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}},
                        },
                    }
                    for e in emails
                ]
            }
        },
    }
    if list_id:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def test_unsubscribe_outside_the_list_is_global(sim: SimulatorServer, client: httpx.Client) -> None:
    list_id = _new_list(client)
    client.post("/api/profile-subscription-bulk-create-jobs", json=_subscribe(["in@shop.io"], list_id))
    client.post("/api/profile-subscription-bulk-create-jobs", json=_subscribe(["out@shop.io"], None))
    url = "/api/profile-subscription-bulk-delete-jobs"
    assert client.post(url, json=_unsubscribe(["in@shop.io", "out@shop.io"], list_id)).status_code == 202
    consent = sim.state.consent()
    assert [x["email"] for x in consent["list_unsubscribes"]] == ["in@shop.io"]
    [glob] = consent["global_unsubscribes"]
    assert (glob["email"], glob["list_id"], glob["reason"]) == ("out@shop.io", list_id, "not_in_list")
    out = sim.state.profile(email="out@shop.io")
    assert out["subscriptions"]["email"]["marketing"]["consent"] == "UNSUBSCRIBED"
    assert sim.state.lists()[0]["members"] == []
    r = client.post(url, json=_unsubscribe([f"u{i}@shop.io" for i in range(101)], list_id))
    assert r.status_code == 400


def test_suppression(sim: SimulatorServer, client: httpx.Client) -> None:
    body = {
        "data": {
            "type": "profile-suppression-bulk-create-job",
            "attributes": {"profiles": {"data": [{"type": "profile", "attributes": {"email": "s@shop.io"}}]}},
        }
    }
    assert client.post("/api/profile-suppression-bulk-create-jobs", json=body).status_code == 202
    assert sim.state.profile(email="s@shop.io")["suppressed"] is True
    assert [s["email"] for s in sim.state.consent()["suppressions"]] == ["s@shop.io"]


def _catalog_create(external_ids: list[str]) -> dict[str, Any]:
    items = [
        {
            "type": "catalog-item",
            "attributes": {
                "external_id": x,
                "title": f"Item {x}",
                "description": "d",
                "url": f"https://shop.io/{x}",
                "price": 9.5,
                "integration_type": "$custom",
                "catalog_type": "$default",
            },
        }
        for x in external_ids
    ]
    return {"data": {"type": "catalog-item-bulk-create-job", "attributes": {"items": {"data": items}}}}


def _wait_job(client: httpx.Client, path: str) -> dict[str, Any]:
    deadline = time.monotonic() + 3
    while True:
        job = client.get(path).json()["data"]
        if job["attributes"]["status"] == "complete" or time.monotonic() > deadline:
            return dict(job)
        time.sleep(0.01)


def test_catalog_jobs(sim: SimulatorServer, client: httpx.Client) -> None:
    r = client.post("/api/catalog-item-bulk-create-jobs", json=_catalog_create(["A", "B"]))
    assert r.status_code == 202
    job = _wait_job(client, f"/api/catalog-item-bulk-create-jobs/{r.json()['data']['id']}")
    assert (job["attributes"]["completed_count"], job["attributes"]["errors"]) == (2, [])
    # B again is a per-item error inside the job, not a 400
    r = client.post("/api/catalog-item-bulk-create-jobs", json=_catalog_create(["B", "C"]))
    job = _wait_job(client, f"/api/catalog-item-bulk-create-jobs/{r.json()['data']['id']}")
    attrs = job["attributes"]
    assert (attrs["completed_count"], attrs["failed_count"]) == (1, 1)
    assert attrs["errors"][0]["source"]["pointer"] == "/data/attributes/items/data/0"
    items = client.get("/api/catalog-items").json()["data"]
    assert [i["id"] for i in items] == [
        "$custom:::$default:::A",
        "$custom:::$default:::B",
        "$custom:::$default:::C",
    ]
    update = {
        "data": {
            "type": "catalog-item-bulk-update-job",
            "attributes": {
                "items": {
                    "data": [
                        {"type": "catalog-item", "id": "$custom:::$default:::A", "attributes": {"price": 5}},
                        {"type": "catalog-item", "id": "$custom:::$default:::Z", "attributes": {"price": 5}},
                    ]
                }
            },
        }
    }
    r = client.post("/api/catalog-item-bulk-update-jobs", json=update)
    job = _wait_job(client, f"/api/catalog-item-bulk-update-jobs/{r.json()['data']['id']}")
    assert job["attributes"]["failed_count"] == 1
    assert sim.state.catalog()["items"][0]["price"] == 5
    variant = {
        "data": {
            "type": "catalog-variant-bulk-create-job",
            "attributes": {
                "variants": {
                    "data": [
                        {
                            "type": "catalog-variant",
                            "attributes": {
                                "external_id": "A-S",
                                "title": "A small",
                                "description": "d",
                                "sku": "A-S",
                                "inventory_policy": 0,
                                "inventory_quantity": 3,
                                "price": 5,
                                "url": "https://shop.io/A",
                            },
                            "relationships": {
                                "item": {"data": {"type": "catalog-item", "id": "$custom:::$default:::A"}}
                            },
                        }
                    ]
                }
            },
        }
    }
    r = client.post("/api/catalog-variant-bulk-create-jobs", json=variant)
    assert r.status_code == 202
    sim.complete_jobs()
    assert [v["sku"] for v in sim.state.catalog()["variants"]] == ["A-S"]
    delete = {
        "data": {
            "type": "catalog-item-bulk-delete-job",
            "attributes": {"items": {"data": [{"type": "catalog-item", "id": "$custom:::$default:::C"}]}},
        }
    }
    r = client.post("/api/catalog-item-bulk-delete-jobs", json=delete)
    sim.complete_jobs()
    assert len(sim.state.catalog()["items"]) == 2
    bad = _catalog_create(["X"])
    del bad["data"]["attributes"]["items"]["data"][0]["attributes"]["url"]
    r = client.post("/api/catalog-item-bulk-create-jobs", json=bad)
    assert r.status_code == 400
    assert r.json()["errors"][0]["source"]["pointer"] == "/data/attributes/items/data/0/attributes/url"
    r = client.post("/api/catalog-item-bulk-create-jobs", json=_catalog_create([str(i) for i in range(101)]))
    assert r.status_code == 400


def test_catalog_jobs_in_flight_limit(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.catalog_jobs_in_flight = 2
    sim.config.time_scale = 1  # jobs take 1.5 s
    codes = [
        client.post("/api/catalog-item-bulk-create-jobs", json=_catalog_create([str(i)])).status_code
        for i in range(3)
    ]
    assert codes == [202, 202, 429]
    sim.complete_jobs()
    assert client.post("/api/catalog-item-bulk-create-jobs", json=_catalog_create(["9"])).status_code == 202
