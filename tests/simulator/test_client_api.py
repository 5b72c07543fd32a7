"""The simulator's client-side surface: /client/events, /client/profiles, klaviyo.js, demo pages."""

from __future__ import annotations

import httpx
import pytest

from simulator import client_api
from simulator.config import Limit
from tests.support.client_schema import errors

HEADERS = {"revision": "2025-01-15", "content-type": "application/vnd.api+json"}


@pytest.fixture
def browser(sim):
    with httpx.Client(base_url=sim.base_url, headers=HEADERS, timeout=10) as c:
        yield c


def event_body(email="shopper@sandbox.test", **extra):
    return {
        "data": {
            "type": "event",
            "attributes": {
                "properties": {"ProductID": "1111", "ProductName": "Winnie the Pooh"},
                "metric": {"data": {"type": "metric", "attributes": {"name": "Viewed Product"}}},
                "profile": {"data": {"type": "profile", "attributes": {"email": email}}},
                **extra,
            },
        }
    }


def test_a_client_event_in_the_published_shape_is_stored_for_the_company(browser, sim):
    body = event_body(value=29.98, unique_id="cart-1_1700000000")
    assert errors("/client/events", body) == []
    answer = browser.post("/client/events/", params={"company_id": "SBX000"}, json=body)
    assert answer.status_code == 202, answer.text
    assert answer.headers["access-control-allow-origin"] == "*"
    (event,) = sim.state.events(metric="Viewed Product")
    assert event["properties"] == {"ProductID": "1111", "ProductName": "Winnie the Pooh"}
    assert event["value"] == 29.98
    assert event["profile"]["email"] == "shopper@sandbox.test"
    # The same unique_id for the same profile and metric is kept once.
    assert browser.post("/client/events/", params={"company_id": "SBX000"}, json=body).status_code == 202
    assert len(sim.state.events(metric="Viewed Product")) == 1


def test_client_events_need_a_known_company_id_a_revision_and_an_identifier(browser, sim):
    answer = browser.post("/client/events/", params={"company_id": "NOPE00"}, json=event_body())
    assert answer.status_code == 400
    assert "company_id 'NOPE00' is not a known public API key" in answer.json()["errors"][0]["detail"]
    answer = browser.post(
        "/client/events/", params={"company_id": "SBX000"}, json=event_body(), headers={"revision": ""}
    )
    assert answer.status_code == 400 and "revision" in answer.json()["errors"][0]["detail"]
    body = event_body(email=None)
    answer = browser.post("/client/events/", params={"company_id": "SBX000"}, json=body)
    assert answer.status_code == 400
    (problem,) = answer.json()["errors"]
    assert problem["source"]["pointer"] == "/data/attributes/profile/data/attributes"
    del body["data"]["attributes"]["metric"]
    assert any("'metric' is a required property" in e for e in errors("/client/events", body))
    assert browser.post("/client/events/", params={"company_id": "SBX000"}, json=body).status_code == 400
    assert sim.state.events() == []


def test_client_profiles_create_then_update_without_changing_identifiers(browser, sim):
    first = {
        "data": {"type": "profile", "attributes": {"email": "shopper@sandbox.test", "first_name": "Ann"}}
    }
    assert errors("/client/profiles", first) == []
    assert browser.post("/client/profiles/", params={"company_id": "SBX000"}, json=first).status_code == 202
    item = {"Title": "Winnie the Pooh", "ItemId": "1111"}
    second = {
        "data": {
            "type": "profile",
            "attributes": {"email": "shopper@sandbox.test", "last_name": "Lee"},
            "meta": {"patch_properties": {"append": {"$viewed_items": item}}},
        }
    }
    assert errors("/client/profiles", second) == []
    assert browser.post("/client/profiles/", params={"company_id": "SBX000"}, json=second).status_code == 202
    (profile,) = sim.state.profiles()
    assert profile["email"] == "shopper@sandbox.test"
    assert (profile["first_name"], profile["last_name"]) == ("Ann", "Lee")
    assert profile["properties"]["$viewed_items"] == [item]


def test_klaviyo_js_is_served_per_company_and_demo_pages_are_hosted(browser, sim):
    script = browser.get("/onsite/js/SBX000/klaviyo.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert 'COMPANY = "SBX000"' in script.text and f'BASE = "{sim.base_url}"' in script.text
    assert browser.get("/onsite/js/NOPE00/klaviyo.js").status_code == 400
    saved = browser.post("/__sim/onsite/pages", json={"pages": {"product": "<h1>Tee</h1>"}}).json()
    page = browser.get(saved["urls"]["product"].removeprefix(sim.base_url))
    assert page.status_code == 200 and page.text == "<h1>Tee</h1>"
    assert browser.get(f"/onsite/demo/{saved['id']}/cart").status_code == 404
    assert browser.post("/__sim/onsite/pages", json={"pages": []}).status_code == 400


def test_client_endpoints_have_their_own_rate_limit(browser, sim, monkeypatch):
    monkeypatch.setattr(client_api, "CLIENT_LIMIT", Limit(burst=2, steady=5))
    answers = [
        browser.post("/client/events/", params={"company_id": "SBX000"}, json=event_body(unique_id=str(n)))
        for n in range(3)
    ]
    assert [a.status_code for a in answers] == [202, 202, 429]
    # RateLimit-* headers describe the steady window, as Klaviyo documents.
    assert answers[0].headers["ratelimit-limit"].startswith("5, 5;w=")
    assert float(answers[2].headers["retry-after"]) > 0
    assert answers[2].json()["errors"][0]["code"] == "throttled"
    assert len(sim.state.events(metric="Viewed Product")) == 2
    # Profiles are counted apart from events.
    body = {"data": {"type": "profile", "attributes": {"email": "shopper@sandbox.test"}}}
    assert browser.post("/client/profiles/", params={"company_id": "SBX000"}, json=body).status_code == 202
