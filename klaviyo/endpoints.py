"""The endpoint table: rate-limit class and batch limits per endpoint, and the envelopes for items."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from klaviyo.serialization import dumps

REVISION = "2026-10-15"
JSON_API = "application/vnd.api+json"
MB5 = 5_000_000  # Klaviyo says "5 MB"; the decimal reading is the safe one.
KB100 = 100_000


@dataclass(frozen=True)
class RateClass:
    """A Klaviyo rate-limit tier: burst per second and steady per minute, per account."""

    name: str
    burst: int
    steady: int


# Klaviyo keeps one bucket per endpoint (group) and account, sized by a tier; the limiter keys its
# windows by (account, class name), so endpoints share a window only where Klaviyo's do.
ACCOUNTS = RateClass("accounts", 1, 15)
EVENTS = RateClass("events", 350, 3500)
EVENTS_BULK = RateClass("events_bulk", 10, 150)
PROFILE_IMPORT_RATE = RateClass("profile_import", 75, 750)
PROFILES = RateClass("profiles", 75, 750)
PROFILE_BULK_IMPORT = RateClass("profile_bulk_import", 10, 150)
PROFILE_BULK_IMPORT_READ = RateClass("profile_bulk_import_read", 10, 150)
LISTS_READ = RateClass("lists_read", 75, 750)
LISTS_WRITE = RateClass("lists_write", 10, 150)
LIST_PROFILE_COUNT = RateClass("list_profile_count", 1, 15)  # reading profile_count is XS-tier
LIST_MEMBERS = RateClass("list_members", 10, 150)
SUBSCRIPTIONS = RateClass("subscriptions", 75, 750)
SUPPRESSIONS = RateClass("suppressions", 75, 750)
METRICS = RateClass("metrics", 10, 150)
CATALOG_WRITE = RateClass("catalog_write", 75, 750)
CATALOG_JOB_READ = RateClass("catalog_job_read", 75, 750)
CATALOG_ITEMS_READ = RateClass("catalog_items_read", 350, 3500)
EVENTS_READ = RateClass("events_read", 350, 3500)
# x-klaviyo-ratelimit of create_webhook, delete_webhook and get_webhook_topics (klaviyo/openapi,
# openapi/stable/apis/<operation>.json): 1/s, 15/m, the XS tier.
WEBHOOKS = RateClass("webhooks", 1, 15)
# x-klaviyo-ratelimit of query_metric_aggregates: a small class, shared by every reconciliation.
METRIC_AGGREGATES = RateClass("metric_aggregates", 3, 60)


@dataclass(frozen=True)
class Endpoint:
    """One Klaviyo operation: its path, rate class and, for bulk ones, the envelope of its items."""

    name: str
    method: str
    path: str
    rate: RateClass
    max_items: int = 1
    max_bytes: int = MB5
    max_item_bytes: int | None = None
    job_type: str | None = None  # JSON:API type of the bulk job resource
    items_attribute: str | None = None  # attribute holding {"data": [items]}; None = top-level data

    @property
    def settles(self) -> bool:
        """Whether the job refuses items only when it runs (profile import, catalog jobs)."""
        return self.job_type is not None and (
            self.job_type == "profile-bulk-import-job" or self.job_type.startswith("catalog-")
        )

    def envelope(
        self,
        items: list[Any],
        relationships: dict[str, Any] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The request document wrapping ``items`` (docs/contracts.md); ``attributes`` adds job options."""
        if self.items_attribute is None:
            return {"data": items}
        data: dict[str, Any] = {
            "type": self.job_type,
            "attributes": {**(attributes or {}), self.items_attribute: {"data": items}},
        }
        if relationships:
            data["relationships"] = relationships
        return {"data": data}

    def envelope_parts(
        self, relationships: dict[str, Any] | None = None, attributes: dict[str, Any] | None = None
    ) -> tuple[bytes, bytes]:
        """Serialized envelope split around the items array: ``prefix + b",".join(items) + suffix``."""
        marker = "\u2063items-marker\u2063"
        body = dumps(self.envelope([marker], relationships, attributes))
        token = dumps([marker])
        head, _, tail = body.partition(token)
        return head + b"[", b"]" + tail

    def envelope_bytes(
        self,
        item_bytes: list[bytes],
        relationships: dict[str, Any] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> bytes:
        """The request body from already serialized items, without serializing them again."""
        prefix, suffix = self.envelope_parts(relationships, attributes)
        return prefix + b",".join(item_bytes) + suffix


def _bulk(
    name: str,
    path: str,
    rate: RateClass,
    max_items: int,
    job_type: str | None,
    items_attribute: str | None,
    method: str = "POST",
    max_item_bytes: int | None = None,
) -> Endpoint:
    return Endpoint(
        name=name,
        method=method,
        path=path,
        rate=rate,
        max_items=max_items,
        max_bytes=MB5,
        max_item_bytes=max_item_bytes,
        job_type=job_type,
        items_attribute=items_attribute,
    )


GET_ACCOUNTS = Endpoint("get_accounts", "GET", "/api/accounts", ACCOUNTS)
CREATE_EVENT = Endpoint("create_event", "POST", "/api/events", EVENTS)
BULK_EVENTS = _bulk(
    "bulk_create_events",
    "/api/event-bulk-create-jobs",
    EVENTS_BULK,
    1000,
    "event-bulk-create-job",
    "events-bulk-create",
)
PROFILE_IMPORT = Endpoint(
    "profile_import", "POST", "/api/profile-import", PROFILE_IMPORT_RATE, max_bytes=KB100
)
UPDATE_PROFILE = Endpoint("update_profile", "PATCH", "/api/profiles/{id}", PROFILES, max_bytes=KB100)
BULK_PROFILES = _bulk(
    "bulk_import_profiles",
    "/api/profile-bulk-import-jobs",
    PROFILE_BULK_IMPORT,
    10_000,
    "profile-bulk-import-job",
    "profiles",
    max_item_bytes=KB100,
)
GET_PROFILE_IMPORT_JOB = Endpoint(
    "get_profile_import_job", "GET", "/api/profile-bulk-import-jobs/{id}", PROFILE_BULK_IMPORT_READ
)
GET_PROFILE_IMPORT_ERRORS = Endpoint(
    "get_profile_import_errors",
    "GET",
    "/api/profile-bulk-import-jobs/{id}/import-errors",
    PROFILE_BULK_IMPORT_READ,
)
GET_LISTS = Endpoint("get_lists", "GET", "/api/lists", LISTS_READ)
GET_LIST = Endpoint("get_list", "GET", "/api/lists/{id}", LIST_PROFILE_COUNT)
CREATE_LIST = Endpoint("create_list", "POST", "/api/lists", LISTS_WRITE)
# Member ids of a list (page[size] up to 100; filter on email or phone_number, any/equals).
GET_LIST_MEMBER_IDS = Endpoint(
    "get_list_member_ids", "GET", "/api/lists/{id}/relationships/profiles", LISTS_READ
)
# A list's member profiles, same filters and page size: which of some contacts are members.
GET_LIST_PROFILES = Endpoint("get_list_profiles", "GET", "/api/lists/{id}/profiles", LISTS_READ)
# Profiles by identifier: filter=any(email,[...]) (page[size] up to 100).
FIND_PROFILES = Endpoint("find_profiles", "GET", "/api/profiles", PROFILES)
RENAME_LIST = Endpoint("rename_list", "PATCH", "/api/lists/{id}", LISTS_WRITE)
ADD_LIST_MEMBERS = _bulk(
    "add_list_members", "/api/lists/{id}/relationships/profiles", LIST_MEMBERS, 1000, None, None
)
REMOVE_LIST_MEMBERS = _bulk(
    "remove_list_members",
    "/api/lists/{id}/relationships/profiles",
    LIST_MEMBERS,
    1000,
    None,
    None,
    method="DELETE",
)
SUBSCRIBE = _bulk(
    "subscribe_profiles",
    "/api/profile-subscription-bulk-create-jobs",
    SUBSCRIPTIONS,
    1000,
    "profile-subscription-bulk-create-job",
    "profiles",
)
UNSUBSCRIBE = _bulk(
    "unsubscribe_profiles",
    "/api/profile-subscription-bulk-delete-jobs",
    SUBSCRIPTIONS,
    100,
    "profile-subscription-bulk-delete-job",
    "profiles",
)
SUPPRESS = _bulk(
    "suppress_profiles",
    "/api/profile-suppression-bulk-create-jobs",
    SUPPRESSIONS,
    100,
    "profile-suppression-bulk-create-job",
    "profiles",
)
GET_METRICS = Endpoint("get_metrics", "GET", "/api/metrics", METRICS)
GET_EVENTS = Endpoint("get_events", "GET", "/api/events", EVENTS_READ)
GET_WEBHOOK_TOPICS = Endpoint("get_webhook_topics", "GET", "/api/webhook-topics", WEBHOOKS)
CREATE_WEBHOOK = Endpoint("create_webhook", "POST", "/api/webhooks", WEBHOOKS)
DELETE_WEBHOOK = Endpoint("delete_webhook", "DELETE", "/api/webhooks/{id}", WEBHOOKS)
CATALOG_ITEMS_CREATE = _bulk(
    "catalog_items_create",
    "/api/catalog-item-bulk-create-jobs",
    CATALOG_WRITE,
    100,
    "catalog-item-bulk-create-job",
    "items",
)
CATALOG_ITEMS_UPDATE = _bulk(
    "catalog_items_update",
    "/api/catalog-item-bulk-update-jobs",
    CATALOG_WRITE,
    100,
    "catalog-item-bulk-update-job",
    "items",
)
CATALOG_ITEMS_DELETE = _bulk(
    "catalog_items_delete",
    "/api/catalog-item-bulk-delete-jobs",
    CATALOG_WRITE,
    100,
    "catalog-item-bulk-delete-job",
    "items",
)
CATALOG_VARIANTS_CREATE = _bulk(
    "catalog_variants_create",
    "/api/catalog-variant-bulk-create-jobs",
    CATALOG_WRITE,
    100,
    "catalog-variant-bulk-create-job",
    "variants",
)
CATALOG_CATEGORIES_CREATE = _bulk(
    "catalog_categories_create",
    "/api/catalog-category-bulk-create-jobs",
    CATALOG_WRITE,
    100,
    "catalog-category-bulk-create-job",
    "categories",
)
CATALOG_VARIANTS_UPDATE = _bulk(
    "catalog_variants_update",
    "/api/catalog-variant-bulk-update-jobs",
    CATALOG_WRITE,
    100,
    "catalog-variant-bulk-update-job",
    "variants",
)
CATALOG_VARIANTS_DELETE = _bulk(
    "catalog_variants_delete",
    "/api/catalog-variant-bulk-delete-jobs",
    CATALOG_WRITE,
    100,
    "catalog-variant-bulk-delete-job",
    "variants",
)
CATALOG_CATEGORIES_UPDATE = _bulk(
    "catalog_categories_update",
    "/api/catalog-category-bulk-update-jobs",
    CATALOG_WRITE,
    100,
    "catalog-category-bulk-update-job",
    "categories",
)
CATALOG_CATEGORIES_DELETE = _bulk(
    "catalog_categories_delete",
    "/api/catalog-category-bulk-delete-jobs",
    CATALOG_WRITE,
    100,
    "catalog-category-bulk-delete-job",
    "categories",
)
GET_CATALOG_JOB = Endpoint("get_catalog_job", "GET", "/api/{kind}/{id}", CATALOG_JOB_READ)
GET_CATALOG_ITEMS = Endpoint("get_catalog_items", "GET", "/api/catalog-items", CATALOG_ITEMS_READ)
GET_CATALOG_ITEM = Endpoint("get_catalog_item", "GET", "/api/catalog-items/{id}", CATALOG_ITEMS_READ)
QUERY_METRIC_AGGREGATES = Endpoint(
    "query_metric_aggregates", "POST", "/api/metric-aggregates", METRIC_AGGREGATES
)

# The bulk endpoints a run can stream items to, by name.
BULK_ENDPOINTS: dict[str, Endpoint] = {
    e.name: e
    for e in (
        BULK_EVENTS,
        BULK_PROFILES,
        ADD_LIST_MEMBERS,
        REMOVE_LIST_MEMBERS,
        SUBSCRIBE,
        UNSUBSCRIBE,
        SUPPRESS,
        CATALOG_ITEMS_CREATE,
        CATALOG_ITEMS_UPDATE,
        CATALOG_ITEMS_DELETE,
        CATALOG_VARIANTS_CREATE,
        CATALOG_VARIANTS_UPDATE,
        CATALOG_VARIANTS_DELETE,
        CATALOG_CATEGORIES_CREATE,
        CATALOG_CATEGORIES_UPDATE,
        CATALOG_CATEGORIES_DELETE,
    )
}
