"""The simulator's consent side: consent changes log Klaviyo's consent events, the Events API reads
them by metric and datetime in cursor pages, and system webhooks are signed and retried."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
from openapi_client.models import WebhookCreateQuery

from tests.support.receiver import receiver


def _metric_id(client: httpx.Client, name: str) -> str:
    return next(m["id"] for m in client.get("/api/metrics").json()["data"] if m["attributes"]["name"] == name)


def _change(sim, kind: str, email: str, at: datetime | None = None, channel: str = "email") -> str:
    body = {"kind": kind, "email": email, "channel": channel, **({"at": at.isoformat()} if at else {})}
    answer = httpx.post(f"{sim.base_url}/__sim/consent-changes", json=body)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["event_id"])


def test_subscribing_and_unsubscribing_log_consent_events(sim, client):
    sub = {
        "data": {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {
                                "email": "ann@shop.io",
                                "phone_number": "+15005550006",
                                "subscriptions": {
                                    "email": {"marketing": {"consent": "SUBSCRIBED"}},
                                    "sms": {"marketing": {"consent": "SUBSCRIBED"}},
                                },
                            },
                        }
                    ]
                }
            },
        }
    }
    assert client.post("/api/profile-subscription-bulk-create-jobs", json=sub).status_code == 202
    # Subscribing again changes nothing, so Klaviyo logs nothing.
    assert client.post("/api/profile-subscription-bulk-create-jobs", json=sub).status_code == 202
    unsub = {
        "data": {
            "type": "profile-subscription-bulk-delete-job",
            "attributes": {
                "profiles": {
                    "data": [
                        {
                            "type": "profile",
                            "attributes": {
                                "email": "ann@shop.io",
                                "subscriptions": {"email": {"marketing": {"consent": "UNSUBSCRIBED"}}},
                            },
                        }
                    ]
                }
            },
        }
    }
    assert client.post("/api/profile-subscription-bulk-delete-jobs", json=unsub).status_code == 202
    metrics = [e["metric"] for e in httpx.get(f"{sim.base_url}/__sim/events").json()["data"]]
    assert metrics == [
        "Subscribed to Email Marketing",
        "Subscribed to SMS Marketing",
        "Unsubscribed from Email Marketing",
    ]


def test_events_api_filters_by_metric_and_datetime_with_cursor_pages(sim, client):
    base = datetime(2026, 11, 1, 12, tzinfo=UTC)
    ids = [_change(sim, "unsubscribe", f"p{i}@shop.io", base + timedelta(minutes=i)) for i in range(5)]
    _change(sim, "bounce", "b@shop.io", base + timedelta(minutes=2))
    metric = _metric_id(client, "Unsubscribed from Email Marketing")
    after = (base + timedelta(minutes=1)).isoformat()
    params = {
        "filter": f'and(equals(metric_id,"{metric}"),greater-than(datetime,{after}))',
        "sort": "datetime",
        "include": "profile",
        "page[size]": "2",
    }
    seen, emails, url, pages = [], set(), "/api/events", 0
    answer = client.get(url, params=params)
    while True:
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages += 1
        seen += [e["id"] for e in body["data"]]
        emails |= {p["attributes"]["email"] for p in body.get("included", [])}
        assert all(e["relationships"]["metric"]["data"]["id"] == metric for e in body["data"])
        if not body["links"].get("next"):  # the last page has none (Klaviyo's spec)
            break
        answer = client.get(body["links"]["next"])
    assert seen == ids[2:] and pages == 2  # after minute 1 exactly, oldest first
    assert emails == {"p2@shop.io", "p3@shop.io", "p4@shop.io"}
    bad = client.get("/api/events", params={"filter": "equals(color,'red')"})
    assert bad.status_code == 400


def test_system_webhooks_are_signed_and_retried(sim, client):
    sim.config.time_scale = 100.0  # retry pauses of 2 s, 4 s ... become 20 ms, 40 ms ...
    # Webhook operations are limited to 1/s (the spec's XS tier); this test is about deliveries.
    sim.config.limits_enabled = False
    topics = {t["id"] for t in client.get("/api/webhook-topics").json()["data"]}
    assert "event:klaviyo.unsubscribed_from_email_marketing" in topics
    with receiver() as (url, got):
        got.fail_next = 2
        document = {
            "data": {
                "type": "webhook",
                "attributes": {"name": "consent", "endpoint_url": url, "secret_key": "s3cret-s3cret-s3cret"},
                "relationships": {
                    "webhook-topics": {
                        "data": [
                            {"type": "webhook-topic", "id": "event:klaviyo.unsubscribed_from_email_marketing"}
                        ]
                    }
                },
            }
        }
        WebhookCreateQuery.from_dict(document)  # the SDK accepts what the console sends
        created = client.post("/api/webhooks", json=document)
        assert created.status_code == 201, created.text
        hook_id = created.json()["data"]["id"]
        event_id = _change(sim, "unsubscribe", "gone@shop.io")
        _change(sim, "bounce", "other@shop.io")  # not a topic of this webhook
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(p["ok"] for p in got.posts):
            time.sleep(0.02)
        posts = list(got.posts)
    assert [p["ok"] for p in posts] == [False, False, True]
    delivered = posts[-1]
    headers = {k.lower(): v for k, v in delivered["headers"].items()}
    expected = hmac.new(
        b"s3cret-s3cret-s3cret", delivered["body"] + headers["klaviyo-timestamp"].encode(), hashlib.sha256
    )
    assert headers["klaviyo-signature"] == expected.hexdigest()
    assert headers["klaviyo-webhook-id"] == hook_id
    body = json.loads(delivered["body"])
    assert body["meta"]["klaviyo_webhook_id"] == hook_id
    [item] = body["data"]
    assert item["topic"] == "event:klaviyo.unsubscribed_from_email_marketing"
    assert item["external_id"] == event_id == item["payload"]["data"]["id"]
    assert item["payload"]["included"][0]["attributes"]["email"] == "gone@shop.io"
    log = httpx.get(f"{sim.base_url}/__sim/webhook-deliveries").json()["data"]
    assert [(d["attempt"], d["status"]) for d in log if event_id in d["external_ids"]] == [
        (1, 500),
        (2, 500),
        (3, 200),
    ]

    assert client.delete(f"/api/webhooks/{hook_id}").status_code == 204
    assert client.delete(f"/api/webhooks/{hook_id}").status_code == 404
    wrong = dict(document)
    wrong["data"] = {
        **document["data"],
        "relationships": {"webhook-topics": {"data": [{"type": "webhook-topic", "id": "event:nope"}]}},
    }
    assert client.post("/api/webhooks", json=wrong).status_code == 400
    plain = {
        "data": {
            **document["data"],
            "attributes": {**document["data"]["attributes"], "endpoint_url": "http://shop.io/x"},
        }
    }
    assert client.post("/api/webhooks", json=plain).status_code == 400
