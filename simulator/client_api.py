"""Klaviyo's client-side surface: a stand-in klaviyo.js, /client/events and /client/profiles.

The stand-in script implements the ``klaviyo`` object (identify, track, trackViewedItem, push,
callbacks and promises; the legacy ``_learnq`` queue too) by calling the client endpoints with the
account's public key as ``company_id``, in the request shapes of Klaviyo's Client API. The
sandbox also hosts "Try it" demo pages that the console uploads, so snippets run on a page that
is not the console's.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson

from simulator.common import Request, read_body
from simulator.config import Account, Limit
from simulator.handlers import _store_event
from simulator.ratelimit import fmt_seconds
from simulator.state import IDENTIFIERS
from simulator.validation import Problem, error

PREFIXES = ("/client/", "/onsite/", "/__sim/onsite")
CLIENT_IDENTIFIERS = ("email", "phone_number", "external_id", "anonymous_id", "_kx")
PROFILE_ATTRIBUTES = frozenset(
    {*CLIENT_IDENTIFIERS, "first_name", "last_name", "organization", "locale", "title", "image", "location"}
)
CORS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
    (b"access-control-allow-headers", b"content-type, revision, accept"),
]
MAX_PAGES = 50
CLIENT_LIMIT = Limit(burst=350, steady=3500)
MAX_BODY = 1024 * 1024


@dataclass
class OnsiteStore:
    """Demo pages the console uploaded and every client request body received, for inspection."""

    pages: dict[str, dict[str, str]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        """Forget pages and recorded requests."""
        with self.lock:
            self.pages.clear()
            self.requests.clear()


async def serve(app: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer one request under /client/, /onsite/ or /__sim/onsite."""
    method, path = scope["method"], scope["path"]
    query = parse_qs(scope.get("query_string", b"").decode(), keep_blank_values=True)
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    host = headers.get("host") or "127.0.0.1"
    base = f"{scope.get('scheme', 'http')}://{host}"
    store: OnsiteStore = app.onsite
    try:
        if method == "OPTIONS":
            await _send(send, 204, b"", CORS)
            return
        if method == "GET" and path.startswith("/onsite/js/") and path.endswith("/klaviyo.js"):
            company = path.removeprefix("/onsite/js/").removesuffix("/klaviyo.js")
            _account(app, company)
            script = stand_in_script(base, company).encode()
            await _send(send, 200, script, [(b"content-type", b"text/javascript; charset=utf-8"), *CORS])
            return
        if method == "GET" and path.startswith("/onsite/demo/"):
            demo, _, page = path.removeprefix("/onsite/demo/").partition("/")
            with store.lock:
                body = store.pages.get(demo, {}).get(page or "product")
            if body is None:
                await _send(send, 404, b"No such demo page (the sandbox was restarted or reset)", [])
                return
            await _send(send, 200, body.encode(), [(b"content-type", b"text/html; charset=utf-8")])
            return
        raw = await _read(receive)
        body = orjson.loads(raw) if raw else None
        if method == "POST" and path.rstrip("/") == "/__sim/onsite/pages":
            await _json(send, 200, _save_pages(store, body, base))
            return
        if method == "GET" and path.rstrip("/") == "/__sim/onsite/requests":
            with store.lock:
                await _json(send, 200, {"data": list(store.requests)})
            return
        if method == "POST" and path.rstrip("/") in ("/client/events", "/client/profiles"):
            company = (query.get("company_id") or [""])[0]
            account = _account(app, company)
            if not headers.get("revision"):
                raise Problem(400, [error(400, "invalid", "The revision header is required", None)])
            kind = "events" if "events" in path else "profiles"
            limits = _rate_limit(app, account, kind)
            with store.lock:
                store.requests.append({"endpoint": kind, "company_id": company, "body": body})
            with app.state.lock:
                app.state.tick()
                acct = app.state.account(account.id)
                req = Request(method, path, query, headers, base, raw=raw, body=body)
                req.account, req.state, req.config, req.acct = account, app.state, app.config, acct
                if kind == "events":
                    create_client_event(req)
                else:
                    create_client_profile(req)
            await _send(send, 202, b"", [*limits, *CORS])
            return
        raise Problem(404, [error(404, "not_found", f"No endpoint {method} {path}")])
    except Problem as problem:
        await _json(send, problem.status, {"errors": problem.errors}, [*problem.headers, *CORS])
    except orjson.JSONDecodeError as exc:
        await _json(send, 400, {"errors": [error(400, "parse_error", f"Malformed JSON: {exc}")]}, CORS)


def _rate_limit(app: Any, account: Account, kind: str) -> list[tuple[bytes, bytes]]:
    """Klaviyo's client endpoints: 350/s burst, 3500/min steady, per account and endpoint."""
    config = app.config
    scaled = config.time_scale != 1
    with app.state.lock:
        decision = app.limiter.acquire(
            (account.id, f"client_{kind}"), CLIENT_LIMIT, config.time_scale, enforce=config.limits_enabled
        )
    if not decision.allowed:
        app.state.stats.rate_limited += 1
        wait = fmt_seconds(decision.retry_after, scaled)
        detail = f"Request was throttled. Expected available in {wait} seconds."
        raise Problem(429, [error(429, "throttled", detail)], decision.headers(scaled))
    headers: list[tuple[bytes, bytes]] = decision.headers(scaled)
    return headers


def _account(app: Any, company: str) -> Account:
    for account in app.config.accounts.values():
        if account.public_key == company:
            return account  # type: ignore[no-any-return]
    raise Problem(
        400,
        [error(400, "invalid", f"company_id {company!r} is not a known public API key (site ID)", None)],
    )


def _save_pages(store: OnsiteStore, body: Any, base: str) -> dict[str, Any]:
    pages = (body or {}).get("pages")
    if not isinstance(pages, dict) or not pages or not all(isinstance(v, str) for v in pages.values()):
        raise Problem(400, [error(400, "invalid", "pages must be an object of page name -> HTML", None)])
    demo = secrets.token_urlsafe(8)
    with store.lock:
        while len(store.pages) >= MAX_PAGES:
            store.pages.pop(next(iter(store.pages)))
        store.pages[demo] = {str(k): v for k, v in pages.items()}
    return {"id": demo, "urls": {name: f"{base}/onsite/demo/{demo}/{name}" for name in pages}}


# ---------------------------------------------------------------- the two client endpoints


def _invalid(detail: str, pointer: str) -> Problem:
    return Problem(400, [error(400, "invalid", detail, pointer)])


def _object(value: Any, pointer: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"{pointer or 'the body'} must be an object", pointer)
    return value


def _profile_attributes(resource: Any, pointer: str) -> dict[str, Any]:
    data = _object(resource, pointer)
    if data.get("type") != "profile":
        raise _invalid("type must be 'profile'", f"{pointer}/type")
    attrs = _object(data.get("attributes"), f"{pointer}/attributes")
    for name in attrs:
        if name not in PROFILE_ATTRIBUTES and name != "properties":
            raise _invalid(f"'{name}' is not a valid profile attribute", f"{pointer}/attributes/{name}")
    if not any(attrs.get(name) for name in CLIENT_IDENTIFIERS):
        raise _invalid(
            "A profile needs one of email, phone_number, external_id, anonymous_id or _kx",
            f"{pointer}/attributes",
        )
    return attrs


def create_client_event(req: Request) -> None:
    """POST /client/events: one event for the browser's profile (validated as Klaviyo does)."""
    data = _object(_object(req.body, "").get("data"), "/data")
    if data.get("type") != "event":
        raise _invalid("type must be 'event'", "/data/type")
    attrs = _object(data.get("attributes"), "/data/attributes")
    if not isinstance(attrs.get("properties"), dict):
        raise _invalid("properties is required and must be an object", "/data/attributes/properties")
    metric = _object(
        _object(attrs.get("metric"), "/data/attributes/metric").get("data"), "/data/attributes/metric/data"
    )
    name = _object(metric.get("attributes"), "/data/attributes/metric/data/attributes").get("name")
    if metric.get("type") != "metric" or not isinstance(name, str) or not name.strip() or len(name) >= 128:
        raise _invalid("metric name must be a string under 128 characters", "/data/attributes/metric/data")
    if attrs.get("value") is not None and not isinstance(attrs["value"], int | float):
        raise _invalid("value must be a number", "/data/attributes/value")
    profile = _object(attrs.get("profile"), "/data/attributes/profile").get("data")
    pattrs = _profile_attributes(profile, "/data/attributes/profile/data")
    assert req.acct is not None
    _store_event(req, req.acct, {"attributes": _server_side(pattrs)}, attrs, False, "client")


def create_client_profile(req: Request) -> None:
    """POST /client/profiles: create or update a profile; identifiers already set are not changed."""
    data = _object(_object(req.body, "").get("data"), "/data")
    attrs = _profile_attributes(data, "/data")
    assert req.acct is not None
    acct = req.acct
    found = acct.find_profile(None, **{k: attrs.get(k) for k in IDENTIFIERS})
    clean = _server_side(attrs)
    if found is None:
        found = acct.create_profile({k: v for k, v in clean.items() if v is not None})
    else:
        # Client endpoints never change an identifier a profile already has (Klaviyo's rule).
        update = {k: v for k, v in clean.items() if not (k in IDENTIFIERS and found.attributes.get(k))}
        acct.update_profile(found, update)
    patch = ((data.get("meta") or {}).get("patch_properties")) or {}
    if patch:
        props = dict(found.attributes.get("properties") or {})
        for key, value in (patch.get("append") or {}).items():
            current = props.get(key)
            items = current if isinstance(current, list) else ([] if current is None else [current])
            props[key] = [*items, *(value if isinstance(value, list) else [value])]
        for key, value in (patch.get("unappend") or {}).items():
            drop = value if isinstance(value, list) else [value]
            props[key] = [v for v in props.get(key) or [] if v not in drop]
        unset = patch.get("unset") or []
        for key in [unset] if isinstance(unset, str) else unset:
            props.pop(key, None)
        acct.update_profile(found, {"properties": props})


def _server_side(attrs: dict[str, Any]) -> dict[str, Any]:
    # The server-side store knows email / phone / external_id; browser ids stay as properties.
    out = {k: v for k, v in attrs.items() if k not in ("anonymous_id", "_kx")}
    return out


# ---------------------------------------------------------------- the stand-in klaviyo.js


def stand_in_script(base: str, company: str) -> str:
    """klaviyo.js for the sandbox: the klaviyo object backed by this simulator's client endpoints."""
    return _SCRIPT.replace("__BASE__", json.dumps(base)).replace("__COMPANY__", json.dumps(company))


_SCRIPT = (Path(__file__).parent / "klaviyo_standin.js").read_text(encoding="utf-8")


# ---------------------------------------------------------------- ASGI plumbing


async def _read(receive: Any) -> bytes:
    return await read_body(receive, MAX_BODY)


async def _json(send: Any, status: int, body: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _send(send, status, orjson.dumps(body), [(b"content-type", b"application/json"), *(extra or [])])


async def _send(send: Any, status: int, raw: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    out = [(b"content-length", str(len(raw)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": raw})
