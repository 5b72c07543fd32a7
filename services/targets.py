"""What each mapping target kind is sent with: the endpoint, job options, and whether jobs settle later.

The run loop (workers/send_run.py) is the same for every target; a new target adds one entry here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from klaviyo import endpoints as ep
from klaviyo.batching import Batch
from klaviyo.client import KlaviyoClient, lists_relationship
from models import SyncRun
from services import list_targets
from sync.mapping import Mapping as MappingSpec

Options = Callable[[SyncRun, MappingSpec], dict[str, Any] | None]


def _none(_run: SyncRun, _spec: MappingSpec) -> None:
    return None


@dataclass(frozen=True)
class SendTarget:
    """How the items of one target kind travel to Klaviyo."""

    endpoint: ep.Endpoint
    # Envelope parts computed per run (e.g. the list a bulk profile import adds everyone to).
    relationships: Options = _none
    attributes: Options = _none
    # Bulk jobs that report per-item errors later (profile import, catalog) must be polled.
    settles: bool = False
    path_params: Callable[[SyncRun, MappingSpec], dict[str, str] | None] = field(default=_none)
    # Where the endpoint depends on the mapping (catalog items: create or update), it is chosen per run.
    endpoint_for: Callable[[SyncRun, MappingSpec], ep.Endpoint] | None = None
    # A step between a batch being cut and sent (list membership: emails and phones -> profile ids).
    prepare: Callable[[KlaviyoClient, Batch], Awaitable[Batch]] | None = None

    def endpoint_of(self, run: SyncRun, spec: MappingSpec) -> ep.Endpoint:
        return self.endpoint_for(run, spec) if self.endpoint_for else self.endpoint


def _profile_lists(run: SyncRun, spec: MappingSpec) -> dict[str, Any] | None:
    """The list a profile import adds everyone to: chosen when starting the run, else the mapping's."""
    list_id = str(run.options.get("list_id") or spec.target.list_id or "").strip()
    return lists_relationship([list_id] if list_id else [])


def _catalog_items(_run: SyncRun, spec: MappingSpec) -> ep.Endpoint:
    """Update mappings address existing items by id; create mappings add new ones."""
    return ep.CATALOG_ITEMS_UPDATE if spec.options.catalog_mode == "update" else ep.CATALOG_ITEMS_CREATE


TARGETS: dict[str, SendTarget] = {
    "event": SendTarget(ep.BULK_EVENTS),
    "order": SendTarget(ep.BULK_EVENTS),
    # Rows by email or phone are resolved to profile ids per batch; an add creates missing profiles.
    "list_membership": SendTarget(
        ep.ADD_LIST_MEMBERS, path_params=list_targets.list_path, prepare=list_targets.add_by_contact
    ),
    # A list_membership mapping run started as "remove" from the Lists page has this kind.
    "list_membership_remove": SendTarget(
        ep.REMOVE_LIST_MEMBERS, path_params=list_targets.list_path, prepare=list_targets.remove_by_contact
    ),
    "subscription": SendTarget(
        ep.SUBSCRIBE, relationships=list_targets.subscribe_list, attributes=list_targets.subscribe_options
    ),
    # Bulk import jobs of up to 10,000 profiles / 5 MB; refused profiles show up when a job finishes.
    "profile": SendTarget(ep.BULK_PROFILES, relationships=_profile_lists, settles=True),
    # Catalog jobs of up to 100 entries; each is polled until done, which also keeps this run far
    # below Klaviyo's 500 catalog jobs in flight. Variants need their item: run items first.
    "catalog_item": SendTarget(ep.CATALOG_ITEMS_CREATE, settles=True, endpoint_for=_catalog_items),
    "catalog_variant": SendTarget(ep.CATALOG_VARIANTS_CREATE, settles=True),
    "catalog_category": SendTarget(ep.CATALOG_CATEGORIES_CREATE, settles=True),
}


# Incremental catalog sync sends each entry to the job of what it needs: create, update or delete.
CATALOG_ENDPOINTS: dict[str, dict[str, ep.Endpoint]] = {
    "catalog_item": {
        "create": ep.CATALOG_ITEMS_CREATE,
        "update": ep.CATALOG_ITEMS_UPDATE,
        "delete": ep.CATALOG_ITEMS_DELETE,
    },
    "catalog_variant": {
        "create": ep.CATALOG_VARIANTS_CREATE,
        "update": ep.CATALOG_VARIANTS_UPDATE,
        "delete": ep.CATALOG_VARIANTS_DELETE,
    },
    "catalog_category": {
        "create": ep.CATALOG_CATEGORIES_CREATE,
        "update": ep.CATALOG_CATEGORIES_UPDATE,
        "delete": ep.CATALOG_CATEGORIES_DELETE,
    },
}


def target_for(kind: str) -> SendTarget | None:
    """The send target of a mapping kind, or None when the console cannot send it yet."""
    return TARGETS.get(kind)
