"""The async Klaviyo client: one pooled httpx.AsyncClient, shared pacing, retries by meaning."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import httpx

from klaviyo import endpoints as ep
from klaviyo.endpoints import JSON_API, REVISION, Endpoint
from klaviyo.errors import Conflict, KlaviyoError, NetworkError, NotFound, RateLimited, error_for_response
from klaviyo.limiter import RateLimiter
from klaviyo.retry import AttemptStats, RetryPolicy, call_with_retry
from klaviyo.serialization import check_finite, dumps, loads

DEFAULT_BASE_URL = "https://a.klaviyo.com"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


@dataclass(frozen=True)
class Response:
    """A successful answer: status, headers and the parsed JSON document ({} when empty)."""

    status: int
    headers: Mapping[str, str]
    doc: dict[str, Any]

    @property
    def id(self) -> str | None:
        data = self.doc.get("data")
        return str(data["id"]) if isinstance(data, dict) and data.get("id") is not None else None


def mask_key(key: str) -> str:
    """``pk_abc...xyz`` -> ``pk_…xyz``: enough to recognise a key, never enough to use it."""
    return f"{key[:3]}…{key[-4:]}" if len(key) > 10 else "…"


@dataclass
class _Shared:
    http: httpx.AsyncClient
    owns_http: bool


@dataclass
class KlaviyoClient:
    """Typed async methods per Klaviyo endpoint. Share one per process; ``for_run`` gives a run's view."""

    api_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL
    limiter: RateLimiter | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    account_id: str = ""
    run_id: str = "default"
    weight: float = 1.0
    timeout: httpx.Timeout = field(default_factory=lambda: DEFAULT_TIMEOUT)
    max_connections: int = 32
    http: httpx.AsyncClient | None = field(default=None, repr=False)
    _shared: _Shared = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.account_id:
            # A stable per-key id for limiter keys that reveals nothing about the key.
            self.account_id = hashlib.sha256(self.api_key.encode()).hexdigest()[:16]
        if self.http is not None:
            self._shared = _Shared(self.http, owns_http=False)
        else:
            self._shared = _Shared(
                httpx.AsyncClient(
                    base_url=self.base_url,
                    timeout=self.timeout,
                    limits=httpx.Limits(
                        max_connections=self.max_connections, max_keepalive_connections=self.max_connections
                    ),
                ),
                owns_http=True,
            )

    @classmethod
    def from_env(cls, api_key: str, **kwargs: Any) -> KlaviyoClient:
        """A client whose base URL comes from KLAVIYO_BASE_URL when set."""
        return cls(api_key, base_url=os.environ.get("KLAVIYO_BASE_URL", DEFAULT_BASE_URL), **kwargs)

    def __repr__(self) -> str:
        key = mask_key(self.api_key)
        return f"KlaviyoClient(key={key!r}, base_url={self.base_url!r}, run_id={self.run_id!r})"

    __str__ = __repr__

    def for_run(self, run_id: str, weight: float = 1.0) -> KlaviyoClient:
        """The same pool and limiter, acquiring turns as ``run_id`` (for fairness between runs)."""
        return replace(self, run_id=run_id, weight=weight, http=self._shared.http)

    async def aclose(self) -> None:
        if self._shared.owns_http:
            await self._shared.http.aclose()

    async def __aenter__(self) -> KlaviyoClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- the one way out ---------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Klaviyo-API-Key {self.api_key}",
            "revision": REVISION,
            "accept": JSON_API,
            "content-type": JSON_API,
        }

    async def _once(
        self,
        endpoint: Endpoint,
        url: str,
        body: bytes | None,
        params: Mapping[str, str] | None,
        stats: AttemptStats,
    ) -> Response:
        if self.limiter is not None:
            await self.limiter.acquire(self.account_id, endpoint.rate, self.run_id, self.weight)
        if stats.first_sent_at is None:
            stats.first_sent_at = time.time()
        try:
            answer = await self._shared.http.request(
                endpoint.method,
                # A shared pool may serve several accounts, so it has no base_url of its own.
                url if url.startswith(("http://", "https://")) else self.base_url.rstrip("/") + url,
                content=body,
                params=params,
                headers=self._headers(),
            )
        except httpx.TimeoutException as error:
            raise NetworkError(f"timeout on {endpoint.name}: {type(error).__name__}") from error
        except httpx.TransportError as error:
            raise NetworkError(f"connection failed on {endpoint.name}: {type(error).__name__}") from error
        headers = answer.headers
        if self.limiter is not None:
            await self.limiter.observe_headers(self.account_id, endpoint.rate, headers)
        if answer.status_code >= 300:
            failure = error_for_response(answer.status_code, answer.content, headers)
            if isinstance(failure, RateLimited) and self.limiter is not None:
                await self.limiter.pause(self.account_id, endpoint.rate, failure.retry_after)
            raise failure
        doc: dict[str, Any] = {}
        if answer.content:
            try:
                parsed = loads(answer.content)
            except ValueError as error:
                raise NetworkError(
                    f"malformed JSON in a {answer.status_code} from {endpoint.name}"
                ) from error
            if not isinstance(parsed, dict):
                raise NetworkError(f"unexpected JSON document from {endpoint.name}")
            doc = parsed
        return Response(answer.status_code, headers, doc)

    async def request(
        self,
        endpoint: Endpoint,
        *,
        path_params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
        url: str | None = None,
        stats: AttemptStats | None = None,
    ) -> Response:
        """Send with pacing and retries; raises a KlaviyoError subclass on failure."""
        target = url or endpoint.path.format(**(path_params or {}))
        stats = stats if stats is not None else AttemptStats()

        async def attempt() -> Response:
            response = await self._once(endpoint, target, body, params, stats)
            stats.last_status = response.status
            return response

        return await call_with_retry(attempt, self.retry, stats, limiter_handles_429=self.limiter is not None)

    async def _json(
        self, endpoint: Endpoint, document: Any, path_params: Mapping[str, str] | None = None
    ) -> Response:
        check_finite(document)
        return await self.request(endpoint, path_params=path_params, body=dumps(document))

    async def send_bulk(
        self,
        endpoint: Endpoint,
        body: bytes,
        path_params: Mapping[str, str] | None = None,
        stats: AttemptStats | None = None,
    ) -> Response:
        """Send an already serialized bulk body (see klaviyo.batching); the job id is ``.id``."""
        return await self.request(endpoint, path_params=path_params, body=body, stats=stats)

    async def paginate(
        self,
        endpoint: Endpoint,
        params: Mapping[str, str] | None = None,
        path_params: Mapping[str, str] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every resource of a collection, following ``links.next`` page by page."""
        response = await self.request(endpoint, params=params, path_params=path_params)
        while True:
            for resource in response.doc.get("data") or []:
                yield resource
            next_url = (response.doc.get("links") or {}).get("next")
            if not next_url:
                return
            response = await self.request(endpoint, url=str(next_url))

    # -- account and events ------------------------------------------------------------------

    async def get_account(self) -> dict[str, Any]:
        """The account behind the key (also the cheapest way to verify a key)."""
        data = (await self.request(ep.GET_ACCOUNTS)).doc.get("data") or []
        if not data:
            raise KlaviyoError("no account returned for this key")
        first: dict[str, Any] = data[0]
        return first

    async def create_event(self, item: dict[str, Any]) -> None:
        """POST /api/events with one ``{"type": "event", "attributes": ...}`` resource."""
        await self._json(ep.CREATE_EVENT, {"data": item})

    async def bulk_create_events(self, items: list[dict[str, Any]]) -> str | None:
        """Create an event bulk job from event-bulk-create items; returns the job id."""
        return (await self._json(ep.BULK_EVENTS, ep.BULK_EVENTS.envelope(items))).id

    # -- profiles ----------------------------------------------------------------------------

    async def import_profile(self, attributes: dict[str, Any], profile_id: str | None = None) -> str:
        """Upsert one profile; a 409 duplicate is resolved by updating the profile Klaviyo names."""
        data: dict[str, Any] = {"type": "profile", "attributes": attributes}
        if profile_id:
            data["id"] = profile_id
        try:
            response = await self._json(ep.PROFILE_IMPORT, {"data": data})
        except Conflict as conflict:
            # meta.duplicate_profile_id is what Klaviyo sends in practice but documents nowhere
            # (create_or_update_profile lists no 409): without it, the profile holding the
            # identifiers is looked up instead.
            duplicate = conflict.duplicate_profile_id or await self._holder_of(attributes, profile_id)
            if duplicate is None:
                raise
            await self.update_profile(duplicate, attributes)
            return duplicate
        if response.id is None:
            raise NetworkError("profile-import answered without a profile id")
        return response.id

    async def _holder_of(self, attributes: Mapping[str, Any], profile_id: str | None) -> str | None:
        """The existing profile that already holds one of ``attributes``' identifiers (email first)."""
        for field_name in ("email", "phone_number", "external_id"):
            value = attributes.get(field_name)
            if not isinstance(value, str) or not value:
                continue
            found = await self.find_profile_ids(field_name, [value])
            holder = found.get(value.lower() if field_name == "email" else value)
            if holder is not None and holder != profile_id:
                return holder
        return None

    async def update_profile(self, profile_id: str, attributes: dict[str, Any]) -> dict[str, Any]:
        """PATCH one profile: a field sent as null clears it; a field left out is unchanged."""
        document = {"data": {"type": "profile", "id": profile_id, "attributes": attributes}}
        return (await self._json(ep.UPDATE_PROFILE, document, {"id": profile_id})).doc

    async def bulk_import_profiles(
        self, items: list[dict[str, Any]], list_ids: Iterable[str] = ()
    ) -> str | None:
        """Start a profile bulk import job (optionally adding to lists); returns the job id."""
        return (
            await self._json(ep.BULK_PROFILES, ep.BULK_PROFILES.envelope(items, lists_relationship(list_ids)))
        ).id

    async def get_profile_import_job(self, job_id: str) -> dict[str, Any]:
        data: dict[str, Any] = (
            await self.request(ep.GET_PROFILE_IMPORT_JOB, path_params={"id": job_id})
        ).doc["data"]
        return data

    def iter_profile_import_errors(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        return self.paginate(ep.GET_PROFILE_IMPORT_ERRORS, path_params={"id": job_id})

    # -- lists -------------------------------------------------------------------------------

    def get_lists(self, params: Mapping[str, str] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every list in the account, all pages."""
        return self.paginate(ep.GET_LISTS, params=params)

    async def get_list(self, list_id: str) -> dict[str, Any]:
        """One list including its ``profile_count``."""
        params = {"additional-fields[list]": "profile_count"}
        data: dict[str, Any] = (
            await self.request(ep.GET_LIST, path_params={"id": list_id}, params=params)
        ).doc["data"]
        return data

    async def create_list(self, name: str, opt_in_process: str | None = None) -> str:
        """Create a list (Klaviyo allows 150 per day); ``opt_in_process`` single_opt_in | double_opt_in."""
        return str((await self.create_list_resource(name, opt_in_process))["id"])

    async def create_list_resource(self, name: str, opt_in_process: str | None = None) -> dict[str, Any]:
        """Create a list and return the resource Klaviyo answered with (id, name, opt-in, dates)."""
        attributes = {"name": name, **({"opt_in_process": opt_in_process} if opt_in_process else {})}
        response = await self._json(ep.CREATE_LIST, {"data": {"type": "list", "attributes": attributes}})
        if response.id is None:
            raise NetworkError("list create answered without an id")
        data = response.doc.get("data") if isinstance(response.doc, dict) else None
        resource: dict[str, Any] = dict(data) if isinstance(data, dict) else {}
        resource["id"] = response.id
        resource.setdefault("attributes", {"name": name})
        return resource

    async def rename_list(self, list_id: str, name: str) -> dict[str, Any]:
        document = {"data": {"type": "list", "id": list_id, "attributes": {"name": name}}}
        return (await self._json(ep.RENAME_LIST, document, {"id": list_id})).doc

    async def list_member_ids(self, list_id: str) -> set[str]:
        """Ids of every profile in a list (100 per page, Klaviyo's maximum)."""
        pages = self.paginate(ep.GET_LIST_MEMBER_IDS, {"page[size]": "100"}, {"id": list_id})
        return {str(ref["id"]) async for ref in pages}

    async def find_profile_ids(self, field: str, values: list[str]) -> dict[str, str]:
        """``{value: profile id}`` for the profiles whose ``field`` (email, phone_number) is one of
        ``values`` (at most 100 per call); values without a profile are left out."""
        return await self._ids_by(ep.FIND_PROFILES, field, values)

    async def find_list_members(self, list_id: str, field: str, values: list[str]) -> dict[str, str]:
        """Like ``find_profile_ids`` but only the list's members: one call checks up to 100 contacts."""
        return await self._ids_by(ep.GET_LIST_PROFILES, field, values, {"id": list_id})

    async def _ids_by(
        self, endpoint: Endpoint, field: str, values: list[str], path_params: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        params = {
            "filter": f"any({field},{dumps(values).decode()})",
            "page[size]": "100",
            "fields[profile]": field,
        }
        found: dict[str, str] = {}
        async for profile in self.paginate(endpoint, params, path_params):
            value = (profile.get("attributes") or {}).get(field)
            if value is not None:
                found[str(value).lower() if field == "email" else str(value)] = str(profile["id"])
        return found

    async def add_list_members(self, list_id: str, profile_ids: Iterable[str]) -> None:
        """Add profiles to a list without touching consent (at most 1,000 per call)."""
        items = [{"type": "profile", "id": pid} for pid in profile_ids]
        await self._json(ep.ADD_LIST_MEMBERS, ep.ADD_LIST_MEMBERS.envelope(items), {"id": list_id})

    async def remove_list_members(self, list_id: str, profile_ids: Iterable[str]) -> None:
        items = [{"type": "profile", "id": pid} for pid in profile_ids]
        await self._json(ep.REMOVE_LIST_MEMBERS, ep.REMOVE_LIST_MEMBERS.envelope(items), {"id": list_id})

    # -- consent -----------------------------------------------------------------------------

    async def subscribe_profiles(
        self,
        items: list[dict[str, Any]],
        list_id: str | None = None,
        historical_import: bool = False,
        custom_source: str | None = None,
    ) -> str | None:
        """Subscribe with consent; ``historical_import`` skips double opt-in and needs ``consented_at``."""
        options = subscription_options(historical_import, custom_source)
        document = ep.SUBSCRIBE.envelope(items, list_relationship(list_id), options)
        return (await self._json(ep.SUBSCRIBE, document)).id

    async def unsubscribe_profiles(
        self, items: list[dict[str, Any]], list_id: str | None = None
    ) -> str | None:
        """Unsubscribe; without ``list_id`` (or when not a member) the unsubscribe is global."""
        return (
            await self._json(ep.UNSUBSCRIBE, ep.UNSUBSCRIBE.envelope(items, list_relationship(list_id)))
        ).id

    async def suppress_profiles(self, emails: Iterable[str]) -> str | None:
        items = [{"type": "profile", "attributes": {"email": email}} for email in emails]
        return (await self._json(ep.SUPPRESS, ep.SUPPRESS.envelope(items))).id

    # -- catalog -----------------------------------------------------------------------------

    async def create_catalog_items(self, items: list[dict[str, Any]]) -> str | None:
        return (await self._json(ep.CATALOG_ITEMS_CREATE, ep.CATALOG_ITEMS_CREATE.envelope(items))).id

    async def update_catalog_items(self, items: list[dict[str, Any]]) -> str | None:
        return (await self._json(ep.CATALOG_ITEMS_UPDATE, ep.CATALOG_ITEMS_UPDATE.envelope(items))).id

    async def delete_catalog_items(self, items: list[dict[str, Any]]) -> str | None:
        return (await self._json(ep.CATALOG_ITEMS_DELETE, ep.CATALOG_ITEMS_DELETE.envelope(items))).id

    async def create_catalog_variants(self, items: list[dict[str, Any]]) -> str | None:
        return (await self._json(ep.CATALOG_VARIANTS_CREATE, ep.CATALOG_VARIANTS_CREATE.envelope(items))).id

    async def create_catalog_categories(self, items: list[dict[str, Any]]) -> str | None:
        return (
            await self._json(ep.CATALOG_CATEGORIES_CREATE, ep.CATALOG_CATEGORIES_CREATE.envelope(items))
        ).id

    async def get_catalog_job(self, job_type: str, job_id: str) -> dict[str, Any]:
        """A catalog bulk job by its JSON:API type (e.g. ``catalog-item-bulk-create-job``) and id."""
        path_params = {"kind": f"{job_type}s", "id": job_id}
        data: dict[str, Any] = (await self.request(ep.GET_CATALOG_JOB, path_params=path_params)).doc["data"]
        return data

    async def get_catalog_item(self, item_id: str) -> dict[str, Any] | None:
        """One catalog item by its full id (``$custom:::$default:::<external_id>``); None when absent."""
        try:
            data: dict[str, Any] = (await self.request(ep.GET_CATALOG_ITEM, path_params={"id": item_id})).doc[
                "data"
            ]
        except NotFound:
            return None
        return data

    def iter_catalog_items(self, params: Mapping[str, str] | None = None) -> AsyncIterator[dict[str, Any]]:
        return self.paginate(ep.GET_CATALOG_ITEMS, params=params)

    # -- metrics -----------------------------------------------------------------------------

    async def get_metrics(self) -> list[dict[str, Any]]:
        """Every metric already in the account, all pages."""
        return [metric async for metric in self.paginate(ep.GET_METRICS)]

    # -- events (read) and system webhooks ----------------------------------------------------

    async def get_event_pages(
        self, metric_id: str, since: str, page_size: int = 200
    ) -> AsyncIterator[tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]]:
        """Events of one metric at or after ``since`` (ISO 8601), oldest first, page by page: each
        page's events and its included profiles by id."""
        params = {
            "filter": f'and(equals(metric_id,"{metric_id}"),greater-or-equal(datetime,{since}))',
            "sort": "datetime",
            "include": "profile",
            "fields[profile]": "email,phone_number,external_id",
            "page[size]": str(page_size),
        }
        response = await self.request(ep.GET_EVENTS, params=params)
        while True:
            included = {
                str(res["id"]): res
                for res in response.doc.get("included") or []
                if res.get("type") == "profile" and res.get("id") is not None
            }
            yield list(response.doc.get("data") or []), included
            next_url = (response.doc.get("links") or {}).get("next")
            if not next_url:
                return
            response = await self.request(ep.GET_EVENTS, url=str(next_url))

    async def get_webhook_topics(self) -> list[dict[str, Any]]:
        """Every system webhook topic the account offers (``event:klaviyo.<metric>``)."""
        return list((await self.request(ep.GET_WEBHOOK_TOPICS)).doc.get("data") or [])

    async def create_webhook(self, name: str, endpoint_url: str, secret_key: str, topics: list[str]) -> str:
        """Create a system webhook posting the topics to ``endpoint_url``, signed with ``secret_key``."""
        document = {
            "data": {
                "type": "webhook",
                "attributes": {"name": name, "endpoint_url": endpoint_url, "secret_key": secret_key},
                "relationships": {
                    "webhook-topics": {"data": [{"type": "webhook-topic", "id": t} for t in topics]}
                },
            }
        }
        response = await self._json(ep.CREATE_WEBHOOK, document)
        if response.id is None:
            raise NetworkError("webhook create answered without an id")
        return response.id

    async def delete_webhook(self, webhook_id: str) -> None:
        await self.request(ep.DELETE_WEBHOOK, path_params={"id": webhook_id})

    async def query_metric_aggregates(self, query: dict[str, Any]) -> dict[str, Any]:
        """POST /api/metric-aggregates with a ``metric-aggregate`` query; the answer's attributes."""
        doc = (await self._json(ep.QUERY_METRIC_AGGREGATES, query)).doc
        attributes: dict[str, Any] = (doc.get("data") or {}).get("attributes") or {}
        return attributes

    async def find_profiles(
        self, field: str, values: list[str], *, subscriptions: bool = False
    ) -> list[dict[str, Any]]:
        """Profiles (all attributes, consent too with ``subscriptions``) whose ``field`` is one of
        ``values`` (at most 100 per call)."""
        params = {"filter": f"any({field},{dumps(values).decode()})", "page[size]": "100"}
        if subscriptions:
            params["additional-fields[profile]"] = "subscriptions"
        return [profile async for profile in self.paginate(ep.FIND_PROFILES, params)]


def lists_relationship(list_ids: Iterable[str]) -> dict[str, Any] | None:
    """The ``lists`` relationship of a profile bulk import job, or None for no lists."""
    ids = list(list_ids)
    return {"lists": {"data": [{"type": "list", "id": i} for i in ids]}} if ids else None


def list_relationship(list_id: str | None) -> dict[str, Any] | None:
    """The single ``list`` relationship of a subscription job, or None."""
    return {"list": {"data": {"type": "list", "id": list_id}}} if list_id else None


def subscription_options(historical_import: bool, custom_source: str | None) -> dict[str, Any] | None:
    options: dict[str, Any] = {}
    if historical_import:
        options["historical_import"] = True
    if custom_source:
        options["custom_source"] = custom_source
    return options or None
