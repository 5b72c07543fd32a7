"""The simulator's ASGI app: a small router, Klaviyo's cross-cutting rules, and the /__sim admin API."""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson

from simulator import aggregates, client_api, consent, faults, handlers
from simulator.common import Request, Response, read_body
from simulator.config import LATEST_REVISION, Account, SimConfig
from simulator.conformance import Recorder
from simulator.ratelimit import Decision, RateLimiter, fmt_seconds
from simulator.state import SimulatorState
from simulator.validation import Problem, error

log = logging.getLogger("simulator")
JSON_API = b"application/vnd.api+json"
# Only big writes store enough objects to be worth moving out of the collector's sight.
GC_FREEZE_BYTES = 32 * 1024
REVISION_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(\.pre)?$")


@dataclass
class Route:
    """One /api endpoint: method, path pattern, handler and rate-limit class."""

    method: str
    template: str
    handler: Callable[[Request], Response]
    limit_class: str | Callable[[Request], str]
    pattern: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template)
        self.pattern = re.compile(f"^{regex}$")

    @property
    def name(self) -> str:
        """How the endpoint is named in /__sim/stats."""
        return f"{self.method} {self.template}"


def _list_get_class(req: Request) -> str:
    # Asking for profile_count puts GET /api/lists/{id} in a much lower rate-limit class.
    fields_arg = req.arg("additional-fields[list]") or ""
    return "list_profile_count" if "profile_count" in fields_arg else "lists_read"


ROUTES = [
    Route("GET", "/api/accounts", handlers.get_accounts, "accounts"),
    Route("POST", "/api/events", handlers.create_event, "events"),
    Route("POST", "/api/event-bulk-create-jobs", handlers.create_events_bulk, "events_bulk"),
    Route("POST", "/api/profile-import", handlers.import_profile, "profile_import"),
    Route("GET", "/api/profiles", handlers.get_profiles, "profiles"),
    Route("GET", "/api/profiles/{id}", handlers.get_profile, "profiles"),
    Route("PATCH", "/api/profiles/{id}", handlers.update_profile, "profiles"),
    Route("POST", "/api/profile-bulk-import-jobs", handlers.create_profile_import_job, "profile_bulk_import"),
    Route(
        "GET", "/api/profile-bulk-import-jobs", handlers.get_profile_import_jobs, "profile_bulk_import_read"
    ),
    Route(
        "GET",
        "/api/profile-bulk-import-jobs/{id}",
        handlers.get_profile_import_job,
        "profile_bulk_import_read",
    ),
    Route(
        "GET",
        "/api/profile-bulk-import-jobs/{id}/import-errors",
        handlers.get_import_errors,
        "profile_bulk_import_read",
    ),
    Route("GET", "/api/lists", handlers.get_lists, "lists_read"),
    Route("POST", "/api/lists", handlers.create_list, "lists_write"),
    Route("GET", "/api/lists/{id}", handlers.get_list, _list_get_class),
    Route("PATCH", "/api/lists/{id}", handlers.update_list, "lists_write"),
    Route("DELETE", "/api/lists/{id}", handlers.delete_list, "lists_write"),
    Route("GET", "/api/lists/{id}/relationships/profiles", handlers.get_list_members, "lists_read"),
    Route("GET", "/api/lists/{id}/profiles", handlers.get_list_profiles, "lists_read"),
    Route("POST", "/api/lists/{id}/relationships/profiles", handlers.add_list_members, "list_members"),
    Route("DELETE", "/api/lists/{id}/relationships/profiles", handlers.remove_list_members, "list_members"),
    Route(
        "POST",
        "/api/profile-subscription-bulk-create-jobs",
        consent.watch(handlers.subscribe),
        "subscriptions",
    ),
    Route(
        "POST",
        "/api/profile-subscription-bulk-delete-jobs",
        consent.watch(handlers.unsubscribe),
        "subscriptions",
    ),
    Route("POST", "/api/profile-suppression-bulk-create-jobs", handlers.suppress, "suppressions"),
    Route("GET", "/api/metrics", handlers.get_metrics, "metrics"),
    Route("GET", "/api/catalog-items", handlers.get_catalog_items, "catalog_items_read"),
    Route("GET", "/api/catalog-items/{id}", handlers.get_catalog_item, "catalog_items_read"),
    Route("POST", "/api/metric-aggregates", aggregates.query_metric_aggregates, "metric_aggregates"),
]
# Job reads Klaviyo's spec rates XL (350/s, 3500/m in x-klaviyo-ratelimit of
# openapi/stable/apis/get_bulk_create_catalog_items_job.json, get_bulk_delete_catalog_items_job.json,
# get_bulk_create_categories_job.json, get_bulk_delete_categories_job.json,
# get_bulk_delete_variants_job.json, get_bulk_update_categories_job.json,
# get_bulk_update_variants_job.json); the item update and
# variant create job reads are 75/s, 750/m (get_bulk_update_catalog_items_job.json,
# get_bulk_create_variants_job.json); the others keep the stricter 75/s until checked.
XL_JOB_READS = {
    "item_create",
    "item_delete",
    "category_create",
    "category_delete",
    "category_update",
    "variant_delete",
    "variant_update",
}
for _kind, _path in handlers.CATALOG_JOB_PATHS.items():
    _read = "catalog_job_read_xl" if _kind in XL_JOB_READS else "catalog_job_read"
    ROUTES.append(Route("POST", f"/api/{_path}", handlers.catalog_job_creator(_kind), "catalog_write"))
    ROUTES.append(Route("GET", f"/api/{_path}", handlers.catalog_job_lister(_kind), _read))
    ROUTES.append(Route("GET", f"/api/{_path}/{{id}}", handlers.catalog_job_getter(_kind), _read))
ROUTES.extend(Route(*entry) for entry in consent.API)


class SimulatorApp:
    """The ASGI callable. ``config`` and ``state`` are shared with the test or server that owns it."""

    def __init__(self, config: SimConfig | None = None, state: SimulatorState | None = None) -> None:
        self.config = config or SimConfig()
        self.state = state or SimulatorState(self.config)
        self.limiter = RateLimiter()
        self.conformance = Recorder()
        self.routes = ROUTES
        self.onsite = client_api.OnsiteStore()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith(client_api.PREFIXES):
            await client_api.serve(self, scope, receive, send)
        elif path.startswith("/__sim"):
            await self._admin(scope, receive, send)
        else:
            await self._api(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- /api ---------------------------------------------------------------------------------

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        path_known = False
        for route in self.routes:
            found = route.pattern.match(path)
            if found:
                path_known = True
                if route.method == method:
                    return route, found.groupdict(), True
        return None, {}, path_known

    async def _api(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        config, state = self.config, self.state
        req = _make_request(scope)
        route, params, path_known = self._match(req.method, req.path)
        if route is None:
            code = 405 if path_known else 404
            detail = "Method not allowed" if path_known else f"No endpoint {req.method} {req.path}"
            await _send(send, code, {"errors": [error(code, "not_found", detail)]}, [])
            return
        req.params = params
        stat_name = route.name
        headers: list[tuple[bytes, bytes]] = []
        try:
            account = self._authenticate(req)
            req.account, req.state, req.config = account, state, config
            headers = self._rate_limit(req, route, account)
            _check_revision(req)
            # Faults that happen before any processing: nothing is stored.
            status = faults.pick_error_status(config, f"{route.method} {route.template}")
            if status is not None:
                state.stats.faults[f"error_{status}"] += 1
                raise Problem(status, [error(status, "error", "Simulated server error")])
            await faults.maybe_delay(config)
            if faults.roll(config, config.faults.drop_share):
                state.stats.faults["drop"] += 1
                _count(state, stat_name, 0)
                faults.drop_connection(send)
                return
            await _read_body(req, receive, scope, config.max_body_bytes)
            with state.lock:
                state.tick()
                req.acct = state.account(account.id)
                response = route.handler(req)
            if config.gc_freeze and len(req.raw) > GC_FREEZE_BYTES and response.status < 300:
                gc.freeze()
        except Problem as problem:
            response = Response(problem.status, {"errors": problem.errors}, problem.headers)
        except Exception:
            # A simulator bug must look like a server error to the client, not crash the connection.
            log.exception("simulator error on %s %s", req.method, req.path)
            response = Response(500, {"errors": [error(500, "error", "Simulator internal error")]})
        response.headers = headers + response.headers
        if config.check_answers:
            self.conformance.record(req.method, req.path, response.status, response.body)
        ok = 200 <= response.status < 300
        if ok and faults.roll(config, config.faults.drop_after_commit_share):
            state.stats.faults["drop_after_commit"] += 1
            _count(state, stat_name, 0)
            faults.drop_connection(send)
            return
        _count(state, stat_name, response.status)
        if ok and faults.roll(config, config.faults.malformed_share):
            state.stats.faults["malformed"] += 1
            await _send_raw(send, response.status, faults.MALFORMED_BODY, response.headers)
            return
        await _send(send, response.status, response.body, response.headers)

    def _authenticate(self, req: Request) -> Account:
        auth = req.headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        if not auth:
            raise Problem(401, [error(401, "not_authenticated", "Missing Authorization header")])
        if scheme != "Klaviyo-API-Key" or not key.strip():
            raise Problem(
                401,
                [
                    error(
                        401,
                        "not_authenticated",
                        "Authorization header must be 'Klaviyo-API-Key <private key>'",
                        title="Incorrect authentication credentials.",
                    )
                ],
            )
        account = self.config.account_for(key.strip())
        if account is None:
            raise Problem(
                401,
                [
                    error(
                        401,
                        "authentication_failed",
                        "Unknown or revoked private API key",
                        title="Incorrect authentication credentials.",
                    )
                ],
            )
        return account

    def _rate_limit(self, req: Request, route: Route, account: Account) -> list[tuple[bytes, bytes]]:
        config = self.config
        cls = route.limit_class if isinstance(route.limit_class, str) else route.limit_class(req)
        limit = config.limits[cls]
        scaled = config.time_scale != 1
        storm = faults.storm_remaining(config)
        if storm > 0:
            self.state.stats.faults["storm"] += 1
            self.state.stats.rate_limited += 1
            decision = Decision(False, limit, 0, storm, storm, 1 / config.time_scale, 60 / config.time_scale)
            raise Problem(429, [_throttled(storm, scaled)], decision.headers(scaled))
        with self.state.lock:
            decision = self.limiter.acquire(
                (account.id, cls), limit, config.time_scale, enforce=config.limits_enabled
            )
        if not decision.allowed:
            self.state.stats.rate_limited += 1
            raise Problem(429, [_throttled(decision.retry_after, scaled)], decision.headers(scaled))
        return decision.headers(scaled)

    # --- /__sim ---------------------------------------------------------------------------------

    async def _admin(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        req = _make_request(scope)
        try:
            await _read_body(req, receive, scope, self.config.max_body_bytes)
            status, body = self._admin_route(req)
        except Problem as problem:
            status, body = problem.status, {"errors": problem.errors}
        except (ValueError, KeyError, TypeError) as exc:
            status, body = 400, {"errors": [error(400, "invalid", str(exc))]}
        await _send(send, status, body, [], content_type=b"application/json")

    def _admin_route(self, req: Request) -> tuple[int, Any]:
        state, config = self.state, self.config
        name = req.path.removeprefix("/__sim").strip("/")
        account_id = req.arg("account")
        if req.method == "GET":
            if name in ("", "health"):
                return 200, {"ok": True}
            if name == "events":
                events = state.events(metric=req.arg("metric"), account_id=account_id)
                offset = int(req.arg("offset") or 0)
                limit = int(req.arg("limit") or len(events))
                return 200, {"count": len(events), "data": events[offset : offset + limit]}
            if name == "profiles":
                profiles = state.profiles(account_id)
                email = req.arg("email")
                if email:
                    profiles = [p for p in profiles if (p.get("email") or "").lower() == email.lower()]
                return 200, {"count": len(profiles), "data": profiles}
            if name == "lists":
                return 200, {"data": state.lists(account_id)}
            if name == "metrics":
                return 200, {"data": state.metrics(account_id)}
            if name == "catalog":
                return 200, state.catalog(account_id)
            if name == "consent":
                return 200, state.consent(account_id)
            if name == "stats":
                return 200, state.snapshot_stats()
            if name == "config":
                return 200, config.to_dict()
            if name == "conformance":
                return 200, self.conformance.to_dict()
        elif req.method == "POST":
            body = req.body or {}
            if name == "config":
                with state.lock:
                    config.update(body)
                return 200, config.to_dict()
            if name == "reset":
                self.reset(limits=True)
                return 200, {"ok": True}
            if name == "conformance/clear":
                self.conformance.clear()
                return 200, {"ok": True}
            if name == "keys":
                for item in body.get("add", []):
                    account = Account(**item["account"]) if item.get("account") else None
                    config.add_key(item["key"], account)
                for key in body.get("revoke", []):
                    config.revoke_key(key)
                return 200, config.to_dict()["accounts"]
            if name == "jobs/complete":
                self.complete_jobs()
                return 200, {"ok": True}
            if name == "opt-ins/confirm":
                return 200, {"confirmed": state.confirm_opt_ins(account_id)}
        found = consent.admin(state, req, name)
        if found is not None:
            return found
        raise Problem(404, [error(404, "not_found", f"No admin endpoint {req.method} {req.path}")])

    def reset(self, limits: bool = True) -> None:
        """Clear stored data and counters (and rate-limit windows)."""
        self.onsite.reset()
        with self.state.lock:
            self.state.reset()
            if limits:
                self.limiter.reset()

    def complete_jobs(self) -> None:
        """Finish every pending bulk job now, regardless of simulated time."""
        from simulator.state import finish_job

        with self.state.lock:
            for acct in self.state.accounts.values():
                for job in [*acct.profile_jobs.values(), *acct.catalog_jobs.values()]:
                    if not job.done:
                        job.created_mono = 0.0
                        finish_job(job)


def _throttled(retry_after: float, scaled: bool) -> dict[str, Any]:
    return error(
        429,
        "throttled",
        f"Request was throttled. Expected available in {fmt_seconds(retry_after, scaled)} seconds.",
    )


def _check_revision(req: Request) -> None:
    revision = req.headers.get("revision")
    if not revision:
        raise Problem(
            400, [error(400, "invalid", "The 'revision' header is required", title="Missing revision.")]
        )
    found = REVISION_RE.match(revision.strip())
    if not found or found.group(1) > LATEST_REVISION:
        raise Problem(
            400,
            [
                error(
                    400,
                    "invalid",
                    f"Invalid revision {revision!r}: use a dated revision up to {LATEST_REVISION}",
                    title="Invalid revision.",
                )
            ],
        )


def _count(state: SimulatorState, name: str, status: int) -> None:
    # status 0 stands for "connection dropped, no answer"
    with state.lock:
        state.stats.requests[name][status] += 1


def _make_request(scope: dict[str, Any]) -> Request:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    query = parse_qs(scope.get("query_string", b"").decode(), keep_blank_values=True)
    host = headers.get("host")
    if not host:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    base_url = f"{scope.get('scheme', 'http')}://{host}"
    return Request(scope["method"], scope["path"], query, headers, base_url)


async def _read_body(req: Request, receive: Any, scope: dict[str, Any], limit: int) -> None:
    length = req.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise Problem(413, [error(413, "too_large", f"Request body is larger than {limit} bytes")])
    req.raw = await read_body(receive, limit)
    if req.raw:
        try:
            req.body = orjson.loads(req.raw)
        except orjson.JSONDecodeError as exc:
            raise Problem(400, [error(400, "parse_error", f"Malformed JSON: {exc}")]) from None


async def _send(
    send: Any,
    status: int,
    body: Any,
    headers: list[tuple[bytes, bytes]],
    content_type: bytes = JSON_API,
) -> None:
    raw = b"" if body is None else orjson.dumps(body)
    await _send_raw(send, status, raw, headers, content_type)


async def _send_raw(
    send: Any,
    status: int,
    raw: bytes,
    headers: list[tuple[bytes, bytes]],
    content_type: bytes = JSON_API,
) -> None:
    out = [(b"content-length", str(len(raw)).encode()), *headers]
    if raw:
        out.append((b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": raw})
