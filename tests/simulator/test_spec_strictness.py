"""The simulator answers as Klaviyo's published spec and guides say, not more leniently."""

from __future__ import annotations

import httpx

from simulator.server import SimulatorServer
from tests.simulator.payloads import bulk, event_item, single_event


def _details(answer: httpx.Response) -> list[tuple[str, str | None]]:
    return [(e["detail"], e["source"].get("pointer")) for e in answer.json()["errors"]]


def test_a_misspelled_attribute_is_refused_not_dropped(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.limits_enabled = False
    event = single_event()
    event["data"]["attributes"]["vlaue"] = 12.5
    answer = client.post("/api/events", json=event)
    assert answer.status_code == 400
    assert _details(answer) == [
        ("'vlaue' is not a valid field for the resource 'event'.", "/data/attributes/vlaue")
    ]
    profile = {"data": {"type": "profile", "attributes": {"email": "ann@shop.io", "frist_name": "Ann"}}}
    answer = client.post("/api/profile-import", json=profile)
    assert answer.status_code == 400
    assert _details(answer) == [
        ("'frist_name' is not a valid field for the resource 'profile'.", "/data/attributes/frist_name")
    ]
    # In a bulk job the pointer names the item, so a client can set that one aside.
    item = event_item()
    item["attributes"]["profile"]["data"]["attributes"]["emial"] = "x@shop.io"
    answer = client.post("/api/event-bulk-create-jobs", json=bulk([event_item(), item]))
    assert answer.status_code == 400
    [(_, pointer)] = _details(answer)
    assert pointer == "/data/attributes/events-bulk-create/data/1/attributes/profile/data/attributes/emial"
    # Free-form objects (properties) take any key.
    ok = single_event()
    ok["data"]["attributes"]["properties"]["anything_at_all"] = 1
    assert client.post("/api/events", json=ok).status_code == 202


def test_suppression_job_is_answered_with_a_job_document(sim: SimulatorServer, client: httpx.Client) -> None:
    body = {
        "data": {
            "type": "profile-suppression-bulk-create-job",
            "attributes": {"profiles": {"data": [{"type": "profile", "attributes": {"email": "s@shop.io"}}]}},
        }
    }
    answer = client.post("/api/profile-suppression-bulk-create-jobs", json=body)
    assert answer.status_code == 202
    job = answer.json()["data"]
    assert job["type"] == "profile-suppression-bulk-create-job" and job["id"]
    assert {"status", "created_at", "total_count"} <= set(job["attributes"]) and job["links"]["self"]
    assert job["attributes"]["total_count"] == 1


def test_page_sizes_are_enforced_and_last_pages_have_no_next(
    sim: SimulatorServer, client: httpx.Client
) -> None:
    sim.config.limits_enabled = False
    for n in range(3):
        assert client.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": f"L{n}"}}})
    assert client.get("/api/lists", params={"page[size]": "11"}).status_code == 400
    first = client.get("/api/lists", params={"page[size]": "2"}).json()
    assert len(first["data"]) == 2 and first["links"]["next"]
    last = client.get(first["links"]["next"]).json()
    assert len(last["data"]) == 1 and "next" not in last["links"]
    assert client.get("/api/catalog-items", params={"page[size]": "101"}).status_code == 400
    assert client.get("/api/catalog-items", params={"page[size]": "100"}).status_code == 200
    metrics = client.get("/api/metrics", params={"page[size]": "5"})
    assert metrics.status_code == 400 and "'page_size' is not a valid field" in metrics.text


def test_list_profiles_carry_joined_group_at(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.limits_enabled = False
    list_id = client.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": "J"}}}).json()[
        "data"
    ]["id"]
    profile = {"data": {"type": "profile", "attributes": {"email": "j@shop.io"}}}
    pid = client.post("/api/profile-import", json=profile).json()["data"]["id"]
    members = {"data": [{"type": "profile", "id": pid}]}
    assert client.post(f"/api/lists/{list_id}/relationships/profiles", json=members).status_code == 204
    [member] = client.get(f"/api/lists/{list_id}/profiles").json()["data"]
    assert member["id"] == pid and member["attributes"]["joined_group_at"]
