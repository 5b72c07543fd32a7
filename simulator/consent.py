"""Consent in the simulator: consent changes become Klaviyo's consent events, the Events API reads
them back (filter by metric and datetime, cursor paging), and the Webhooks API with signed system
webhook deliveries (retried when the receiver fails).

Kept apart from handlers.py and state.py: app.py wraps the subscription handlers with ``watch`` and
registers ``API`` and ``admin``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import operator
import queue
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from simulator.common import Request, Response, paginate
from simulator.state import AccountState, Profile, SimulatorState, new_id, new_list_id, now_iso
from simulator.validation import MODELS, Problem, error, invalid, parse_time, validate_shape

log = logging.getLogger("simulator.consent")

METRIC_FOR = {
    ("subscribed", "email"): "Subscribed to Email Marketing",
    ("unsubscribed", "email"): "Unsubscribed from Email Marketing",
    ("subscribed", "sms"): "Subscribed to SMS Marketing",
    ("unsubscribed", "sms"): "Unsubscribed from SMS Marketing",
    ("spam_complaint", "email"): "Marked Email as Spam",
    ("bounced", "email"): "Bounced Email",
}
# Other Klaviyo topics an account offers, so the console has to pick the consent ones by name.
OTHER_METRICS = ("Received Email", "Opened Email", "Clicked Email", "Sent SMS", "Received SMS")
ADMIN_KINDS = {"unsubscribe": "unsubscribed", "resubscribe": "subscribed", "spam": "spam_complaint"}
ADMIN_KINDS["bounce"] = "bounced"
DELIVERY_ATTEMPTS = 8
MODELS.setdefault("webhook_create", __import__("openapi_client").models.WebhookCreateQuery)


def topic_id(metric: str) -> str:
    return "event:klaviyo." + re.sub(r"[^a-z0-9]+", "_", metric.lower()).strip("_")


TOPICS = {topic_id(m): m for m in [*METRIC_FOR.values(), *OTHER_METRICS]}


# --- consent events ---------------------------------------------------------------------------


def _webhooks(acct: AccountState) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] | None = getattr(acct, "webhooks", None)
    if found is None:
        found = {}
        acct.webhooks = found  # type: ignore[attr-defined]
    return found


def record(
    state: SimulatorState,
    acct: AccountState,
    profile: Profile,
    kind: str,
    channel: str,
    when: datetime | None = None,
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Store the consent event Klaviyo would log for this change, and fire the webhooks on its topic."""
    metric = METRIC_FOR[(kind, channel)]
    if metric not in acct.metrics:
        stamp = now_iso()
        acct.metrics[metric] = {"id": new_list_id(), "name": metric, "created": stamp, "updated": stamp}
    at = (when or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    event = {
        "id": new_id(),
        "account_id": acct.account_id,
        "profile_id": profile.id,
        "profile": {"id": profile.id, **{k: profile.attributes.get(k) for k in ("email", "phone_number")}},
        "metric": metric,
        "properties": {"channel": channel, **(properties or {})},
        "time": at.isoformat(),
        "datetime": at.isoformat(),
        "value": None,
        "value_currency": None,
        "unique_id": None,
        "backfill": False,
        "source": "consent",
        "received_at": time.time(),
    }
    acct.events.append(event)
    topic = topic_id(metric)
    for hook in _webhooks(acct).values():
        if topic in hook["topics"]:
            _deliverer(state).push(hook, acct, topic, event)
    return event


def _consent_of(profile: Profile | None) -> dict[str, str | None]:
    if profile is None:
        return {"email": None, "sms": None}
    subs = profile.subscriptions
    return {ch: ((subs.get(ch) or {}).get("marketing") or {}).get("consent") for ch in ("email", "sms")}


def watch(handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
    """Wrap a subscribe / unsubscribe handler: each profile whose marketing consent it changed gets
    the matching consent event (as Klaviyo logs one per change)."""

    def wrapped(req: Request) -> Response:
        acct = req.acct
        assert acct is not None and req.state is not None
        try:
            items = req.body["data"]["attributes"]["profiles"]["data"]
        except (KeyError, TypeError):
            items = []

        def find(item: dict[str, Any]) -> Profile | None:
            attrs = item.get("attributes") or {}
            return acct.find_profile(item.get("id"), **{k: attrs.get(k) for k in ("email", "phone_number")})

        before = [_consent_of(find(item)) for item in items if isinstance(item, dict)]
        response = handler(req)
        if response.status >= 300:
            return response
        for item, old in zip([i for i in items if isinstance(i, dict)], before, strict=True):
            profile = find(item)
            if profile is None:
                continue
            new = _consent_of(profile)
            for channel in ("email", "sms"):
                if new[channel] != old[channel] and new[channel] in ("SUBSCRIBED", "UNSUBSCRIBED"):
                    kind = "subscribed" if new[channel] == "SUBSCRIBED" else "unsubscribed"
                    record(req.state, acct, profile, kind, channel, properties={"method": "API"})
        return response

    return wrapped


def apply_admin_change(state: SimulatorState, acct: AccountState, body: dict[str, Any]) -> dict[str, Any]:
    """What a recipient does inside Klaviyo (unsubscribe link, resubscribe form, spam button) or a
    bounce: change the profile's consent and log the event, optionally at a past time ``at``."""
    kind = ADMIN_KINDS.get(str(body.get("kind")))
    if kind is None:
        raise ValueError(f"kind must be one of {', '.join(ADMIN_KINDS)}")
    channel = str(body.get("channel") or "email")
    if (kind, channel) not in METRIC_FOR:
        raise ValueError(f"{body.get('kind')} is not a change of the {channel} channel")
    ident = {k: body[k] for k in ("email", "phone_number") if body.get(k)}
    if not ident:
        raise ValueError("give an email or a phone_number")
    when = parse_time(body["at"]) if body.get("at") else None
    if body.get("at") and when is None:
        raise ValueError("at must be an ISO 8601 datetime")
    profile = acct.find_profile(None, **ident) or acct.create_profile(ident)
    stamp = (when or datetime.now(UTC)).isoformat(timespec="seconds")
    consent = "SUBSCRIBED" if kind == "subscribed" else "UNSUBSCRIBED"
    profile.subscriptions.setdefault(channel, {})["marketing"] = {"consent": consent, "at": stamp}
    if kind in ("spam_complaint", "bounced"):
        profile.suppressed = True
    event = record(state, acct, profile, kind, channel, when, {"method": "sandbox"})
    return {"event_id": event["id"], "profile_id": profile.id, "metric": event["metric"]}


# --- Events API -------------------------------------------------------------------------------

_CALL = re.compile(r"(equals|greater-than|greater-or-equal|less-than|less-or-equal)\((\w+),([^()]*)\)")


def _filters(expr: str) -> list[tuple[str, str, str]]:
    expr = expr.strip()
    if expr.startswith("and(") and expr.endswith(")"):
        expr = expr[4:-1]
    found = [(op, name, value.strip().strip('"')) for op, name, value in _CALL.findall(expr)]
    rest = _CALL.sub("", expr).replace(",", "").strip()
    if rest or not found:
        raise Problem(400, [invalid(f"Invalid filter: {expr!r}", None)])
    for op, name, value in found:
        if name == "metric_id" and op != "equals":
            raise Problem(400, [invalid("metric_id supports only equals", None)])
        if name == "datetime" and parse_time(value) is None:
            raise Problem(400, [invalid(f"Invalid datetime {value!r} in filter", None)])
        if name not in ("metric_id", "datetime", "profile_id"):
            raise Problem(400, [invalid(f"Filtering on {name!r} is not supported", None)])
    return found


def _event_resource(acct: AccountState, event: dict[str, Any]) -> dict[str, Any]:
    when = parse_time(event["datetime"]) or datetime.now(UTC)
    metric_id = (acct.metrics.get(event["metric"]) or {}).get("id")
    return {
        "type": "event",
        "id": event["id"],
        "attributes": {
            "timestamp": int(when.timestamp()),
            "event_properties": event.get("properties") or {},
            "datetime": when.isoformat(),
            "uuid": event["id"],
        },
        "relationships": {
            "profile": {"data": {"type": "profile", "id": event["profile_id"]}},
            "metric": {"data": {"type": "metric", "id": metric_id}},
        },
    }


def _profile_resource(acct: AccountState, profile_id: str) -> dict[str, Any] | None:
    profile = acct.profiles.get(profile_id)
    if profile is None:
        return None
    attrs = {k: profile.attributes.get(k) for k in ("email", "phone_number", "external_id")}
    return {"type": "profile", "id": profile.id, "attributes": attrs}


def _stored_time(event: dict[str, Any]) -> datetime:
    when = parse_time(event["datetime"])
    assert when is not None  # the simulator stores only valid times
    return when


def get_events(req: Request) -> Response:
    """GET /api/events: filter by metric_id / datetime / profile_id, sort by datetime, 200 per page."""
    acct = req.acct
    assert acct is not None
    metric_names = {m["id"]: name for name, m in acct.metrics.items()}
    events = list(acct.events)
    for op, name, value in _filters(req.arg("filter") or "") if req.arg("filter") else []:
        if name == "metric_id":
            wanted = metric_names.get(value)
            events = [e for e in events if e["metric"] == wanted]
        elif name == "profile_id":
            events = [e for e in events if e["profile_id"] == value]
        else:
            bound = parse_time(value)
            assert bound is not None
            compare = {
                "greater-than": operator.gt,
                "greater-or-equal": operator.ge,
                "less-than": operator.lt,
                "less-or-equal": operator.le,
                "equals": operator.eq,
            }[op]
            events = [e for e in events if compare(_stored_time(e), bound)]
    sort = req.arg("sort") or "datetime"
    if sort.lstrip("-") not in ("datetime", "timestamp"):
        raise Problem(400, [invalid(f"Invalid sort {sort!r}", None)])
    # Stable: events of the same second keep the order they were stored in.
    events.sort(key=lambda e: e["datetime"], reverse=sort.startswith("-"))
    page, links = paginate(req, events, 200, max_size=200)
    data = [
        _event_resource(acct, e) | {"links": {"self": f"{req.base_url}/api/events/{e['id']}"}} for e in page
    ]
    body: dict[str, Any] = {"data": data, "links": links}
    if "profile" in (req.arg("include") or "").split(","):
        ids = dict.fromkeys(e["profile_id"] for e in page)
        body["included"] = [r for r in (_profile_resource(acct, i) for i in ids) if r]
    return Response(200, body)


# --- Webhooks API -----------------------------------------------------------------------------


def get_webhook_topics(req: Request) -> Response:
    """GET /api/webhook-topics."""
    # A topic is type, id and links only (WebhookTopicResponseObjectResource of
    # get_webhook_topics.json, klaviyo/openapi): no attributes.
    data = [
        {"type": "webhook-topic", "id": t, "links": {"self": f"{req.base_url}/api/webhook-topics/{t}"}}
        for t in TOPICS
    ]
    return Response(200, {"data": data, "links": {"self": f"{req.base_url}/api/webhook-topics"}})


def _hook_resource(req: Request, hook: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "webhook",
        "id": hook["id"],
        "attributes": {
            "name": hook["name"],
            "endpoint_url": hook["endpoint_url"],
            "enabled": True,
            "created_at": hook["created_at"],
            "updated_at": hook["created_at"],
        },
        "relationships": {
            "webhook-topics": {"data": [{"type": "webhook-topic", "id": t} for t in hook["topics"]]}
        },
        "links": {"self": f"{req.base_url}/api/webhooks/{hook['id']}"},
    }


def create_webhook(req: Request) -> Response:
    """POST /api/webhooks: name, endpoint_url (HTTPS; HTTP only on loopback), secret_key, topics."""
    body = req.body
    validate_shape("webhook_create", body)
    assert req.acct is not None
    attrs = body["data"]["attributes"]
    url = str(attrs["endpoint_url"])
    parsed = httpx.URL(url)
    if parsed.scheme != "https" and parsed.host not in ("127.0.0.1", "localhost", "::1"):
        raise Problem(400, [invalid("endpoint_url must use HTTPS", "/data/attributes/endpoint_url")])
    rel = ((body["data"].get("relationships") or {}).get("webhook-topics") or {}).get("data") or []
    topics = [str(t["id"]) for t in rel]
    for i, topic in enumerate(topics):
        if topic not in TOPICS:
            ptr = f"/data/relationships/webhook-topics/data/{i}/id"
            raise Problem(400, [invalid(f"Unknown webhook topic {topic!r}", ptr)])
    if not topics:
        raise Problem(400, [invalid("At least one topic is required", "/data/relationships/webhook-topics")])
    hook = {
        "id": new_id(),
        "name": attrs["name"],
        "endpoint_url": url,
        "secret_key": attrs.get("secret_key") or "",
        "topics": topics,
        "created_at": now_iso(),
    }
    _webhooks(req.acct)[hook["id"]] = hook
    return Response(201, {"data": _hook_resource(req, hook)})


def get_webhooks(req: Request) -> Response:
    assert req.acct is not None
    return Response(200, {"data": [_hook_resource(req, h) for h in _webhooks(req.acct).values()]})


def delete_webhook(req: Request) -> Response:
    assert req.acct is not None
    if _webhooks(req.acct).pop(req.params["id"], None) is None:
        raise Problem(404, [error(404, "not_found", f"Webhook {req.params['id']} not found")])
    return Response(204)


API: list[tuple[str, str, Callable[[Request], Response], str]] = [
    ("GET", "/api/events", get_events, "events_read"),
    ("GET", "/api/webhook-topics", get_webhook_topics, "webhooks"),
    ("GET", "/api/webhooks", get_webhooks, "webhooks"),
    ("POST", "/api/webhooks", create_webhook, "webhooks"),
    ("DELETE", "/api/webhooks/{id}", delete_webhook, "webhooks"),
]


# --- deliveries -------------------------------------------------------------------------------


def sign(secret: str, body: bytes, timestamp: str) -> str:
    """Klaviyo-Signature: hex HMAC-SHA256 of the raw body followed by the Klaviyo-Timestamp value."""
    mac = hmac.new(secret.encode(), body, hashlib.sha256)
    mac.update(timestamp.encode())
    return mac.hexdigest()


class Deliverer:
    """Posts system webhooks from a daemon thread; a failed delivery is retried with doubling pauses
    (divided by the time scale) up to DELIVERY_ATTEMPTS times, then given up, as Klaviyo does."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self.log: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._run, name="sim-webhooks", daemon=True)
        self.thread.start()

    def push(self, hook: dict[str, Any], acct: AccountState, topic: str, event: dict[str, Any]) -> None:
        payload: dict[str, Any] = {"data": _event_resource(acct, event)}
        profile = _profile_resource(acct, event["profile_id"])
        if profile:
            payload["included"] = [profile]
        item = {"topic": topic, "external_id": event["id"], "payload": payload}
        self.queue.put(
            {"hook": dict(hook), "account": acct.account_id, "items": [item], "attempt": 0, "due": 0.0}
        )

    def _run(self) -> None:
        waiting: list[dict[str, Any]] = []
        with httpx.Client(timeout=10.0) as http:
            while True:
                timeout = max(
                    0.0, min((d["due"] for d in waiting), default=time.monotonic() + 1) - time.monotonic()
                )
                with contextlib.suppress(queue.Empty):
                    waiting.append(self.queue.get(timeout=min(timeout, 1.0)))
                now = time.monotonic()
                due = [d for d in waiting if d["due"] <= now]
                waiting = [d for d in waiting if d["due"] > now]
                for delivery in due:
                    if not self._send(http, delivery):
                        delivery["attempt"] += 1
                        if delivery["attempt"] < DELIVERY_ATTEMPTS:
                            pause = (2 ** delivery["attempt"]) / max(self.state.config.time_scale, 1e-9)
                            delivery["due"] = time.monotonic() + pause
                            waiting.append(delivery)

    def _send(self, http: httpx.Client, delivery: dict[str, Any]) -> bool:
        hook = delivery["hook"]
        stamp = str(int(time.time()))
        body = orjson.dumps(
            {
                "data": delivery["items"],
                "meta": {
                    "klaviyo_account_id": delivery["account"],
                    "klaviyo_webhook_id": hook["id"],
                    "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
                },
            }
        )
        headers = {
            "Content-Type": "application/json",
            "Klaviyo-Webhook-Id": hook["id"],
            "Klaviyo-Timestamp": stamp,
            "Klaviyo-Signature": sign(hook["secret_key"], body, stamp),
        }
        entry: dict[str, Any] = {
            "webhook_id": hook["id"],
            "attempt": delivery["attempt"] + 1,
            "at": now_iso(),
        }
        entry["external_ids"] = [i["external_id"] for i in delivery["items"]]
        try:
            answer = http.post(hook["endpoint_url"], content=body, headers=headers)
            entry["status"] = answer.status_code
            ok = 200 <= answer.status_code < 300
        except httpx.HTTPError as exc:
            entry["status"], entry["error"], ok = 0, type(exc).__name__, False
        with self.state.lock:
            self.log.append(entry)
        return ok


_DELIVERERS: dict[int, Deliverer] = {}
_DELIVERERS_LOCK = threading.Lock()


def _deliverer(state: SimulatorState) -> Deliverer:
    with _DELIVERERS_LOCK:
        found = _DELIVERERS.get(id(state))
        if found is None or found.state is not state:
            found = _DELIVERERS[id(state)] = Deliverer(state)
        return found


# --- /__sim -----------------------------------------------------------------------------------


def admin(state: SimulatorState, req: Request, name: str) -> tuple[int, Any] | None:
    """The consent admin endpoints, or None when ``name`` is not one of them."""
    account_id = req.arg("account") or "SBX000"
    if req.method == "POST" and name == "consent-changes":
        body = req.body or {}
        with state.lock:
            acct = state.account(str(body.get("account") or account_id))
            return 200, apply_admin_change(state, acct, body)
    if req.method == "GET" and name == "webhook-deliveries":
        with state.lock:
            found = _DELIVERERS.get(id(state))
            return 200, {"data": list(found.log) if found else []}
    if req.method == "GET" and name == "webhooks":
        with state.lock:
            acct = state.account(account_id)
            return 200, {
                "data": [{k: v for k, v in h.items() if k != "secret_key"} for h in _webhooks(acct).values()]
            }
    return None
