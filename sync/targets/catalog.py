"""Catalog targets: rows -> catalog item, variant or category objects, plus content hashes for
incremental sync (send only what changed since the last run)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from collections.abc import Mapping as RowMapping
from dataclasses import dataclass
from typing import Any

import orjson

from sync.compiler import EMPTY
from sync.issues import RuleError
from sync.mapping import Mapping, TargetKind
from sync.targets.common import Item, MappingError, catalog_id, check_targets, split_target

ITEM_FIELDS = frozenset(
    {"external_id", "title", "description", "url", "price", "image_full_url", "image_thumbnail_url", "images",
     "published"}
)  # fmt: skip
ITEM_REQUIRED = ("external_id", "title", "description", "url")
VARIANT_FIELDS = ITEM_FIELDS | {"sku", "inventory_policy", "inventory_quantity", "item_external_id"}
VARIANT_REQUIRED = ("external_id", "title", "description", "sku", "inventory_quantity", "price", "url")
CATEGORY_FIELDS = frozenset({"external_id", "name", "item_external_ids"})
CATEGORY_REQUIRED = ("external_id", "name")
# Update jobs address an entry by id and may not resend these.
_CREATE_ONLY = ("external_id", "integration_type", "catalog_type")

_TYPES = {
    TargetKind.CATALOG_ITEM: ("catalog-item", ITEM_FIELDS, ITEM_REQUIRED),
    TargetKind.CATALOG_VARIANT: ("catalog-variant", VARIANT_FIELDS, VARIANT_REQUIRED),
    TargetKind.CATALOG_CATEGORY: ("catalog-category", CATEGORY_FIELDS, CATEGORY_REQUIRED),
}


class CatalogBuilder:
    """Builds catalog items, variants or categories (``$custom`` integration, ``$default`` catalog)."""

    def __init__(self, mapping: Mapping) -> None:
        kind = mapping.target.kind
        if kind not in _TYPES:
            raise MappingError(f"{kind} is not a catalog target")
        self.type, allowed, self.required = _TYPES[kind]
        targets = mapping.targets()
        check_targets(targets, allowed, ("custom_metadata.",), self.type)
        self.update = mapping.options.catalog_mode == "update"
        self.slots = [
            (t, split_target(t)) for t in targets if t not in ("item_external_id", "item_external_ids")
        ]

    def build(self, values: dict[str, Any], row: RowMapping[str, Any]) -> list[Item]:
        """One catalog object; RuleError naming the first missing required field."""
        missing = [name for name in self.required if values.get(name, EMPTY) in (EMPTY, None, "")]
        if self.update:
            missing = [name for name in missing if name == "external_id"]
        if missing:
            raise RuleError("missing_required", f"a {self.type} needs {', '.join(missing)}", missing[0])
        attributes: dict[str, Any] = {}
        for target, path in self.slots:
            value = values.get(target, EMPTY)
            if value is EMPTY:
                continue
            if len(path) == 1:
                attributes[target] = value
            else:
                attributes.setdefault(path[0], {})[".".join(path[1:])] = value  # custom_metadata is flat
        external_id = str(attributes["external_id"])
        item: Item = {"type": self.type}
        if self.update:
            item["id"] = catalog_id(external_id)
            for name in _CREATE_ONLY:
                attributes.pop(name, None)
        else:
            attributes["integration_type"] = "$custom"
            attributes["catalog_type"] = "$default"
        item["attributes"] = attributes
        relationships = self._relationships(values)
        if relationships:
            item["relationships"] = relationships
        return [item]

    def _relationships(self, values: dict[str, Any]) -> dict[str, Any] | None:
        if self.type == "catalog-variant" and not self.update:
            parent = values.get("item_external_id")
            if not parent:
                raise RuleError(
                    "missing_required", "a catalog variant needs item_external_id", "item_external_id"
                )
            return {"item": {"data": {"type": "catalog-item", "id": catalog_id(str(parent))}}}
        if self.type == "catalog-category":
            members = values.get("item_external_ids")
            if members:
                ids = members if isinstance(members, list) else [members]
                return {"items": {"data": [{"type": "catalog-item", "id": catalog_id(str(m))} for m in ids]}}
        return None


def content_hash(item: Item) -> str:
    """Hash of what Klaviyo stores for a catalog entry; unchanged hash -> nothing to send."""
    body = {"type": item.get("type"), "attributes": item.get("attributes"), "rel": item.get("relationships")}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def entry_id(item: Item) -> str:
    """The compound id of a catalog item (create or update form)."""
    if "id" in item:
        return str(item["id"])
    return catalog_id(str(item["attributes"]["external_id"]))


def _parent_of(item: Item) -> str | None:
    """The external id of a variant's item (None for items and categories)."""
    parent = ((item.get("relationships") or {}).get("item") or {}).get("data") or {}
    compound = str(parent.get("id") or "")
    return compound.rsplit(":::", 1)[-1] if compound else None


# The entry type stored in the sync state, by JSON:API type.
ENTRY_TYPES = {"catalog-item": "item", "catalog-variant": "variant", "catalog-category": "category"}


def update_form(item: Item) -> Item:
    """The update-job form of a create-form entry: addressed by id, without create-only fields."""
    attributes = {k: v for k, v in item["attributes"].items() if k not in _CREATE_ONLY}
    updated: Item = {"type": item["type"], "id": entry_id(item), "attributes": attributes}
    relationships = dict(item.get("relationships") or {})
    relationships.pop("item", None)  # a variant cannot move to another item
    if relationships:
        updated["relationships"] = relationships
    return updated


def delete_form(item_type: str, klaviyo_id: str) -> Item:
    """The delete-job form of an entry."""
    return {"type": item_type, "id": klaviyo_id}


@dataclass(frozen=True)
class Known:
    """An entry as the last successful sync left it."""

    content_hash: str
    klaviyo_id: str
    deleted: bool = False
    run_id: int | None = None


@dataclass(frozen=True)
class Decision:
    """What one entry needs: ``create``, ``update`` or ``delete``, with the body to send."""

    op: str
    body: Item
    external_id: str
    content_hash: str
    parent: str | None = None  # a variant's item external id


class CatalogSync:
    """Decides per entry from the hashes of the last sync: create new, update changed, skip unchanged.

    Entries this run already sent (an earlier attempt of a resumed run) are skipped without being
    counted as unchanged.
    """

    def __init__(
        self, item_type: str, known: dict[str, Known], run_id: int, sources: set[int] | None = None
    ) -> None:
        self.item_type = item_type
        self.known = known
        self.run_id = run_id
        # Runs whose entries this source may delete (the same mapping's); None: any run's.
        self.sources = sources
        self.seen: set[str] = set()
        self.unchanged = 0
        self.planned: dict[str, int] = {"create": 0, "update": 0, "delete": 0}

    def decide(self, item: Item) -> Decision | None:
        """The decision for one create-form entry, or None when Klaviyo already has it as it is."""
        external_id = str(item["attributes"]["external_id"])
        if external_id in self.seen:
            raise RuleError(
                "duplicate_external_id",
                f"external_id {external_id!r} appears earlier in the source; only the first is synced",
                "external_id",
            )
        self.seen.add(external_id)
        digest = content_hash(item)
        known = self.known.get(external_id)
        parent = _parent_of(item)
        if known is None or known.deleted:
            decision = Decision("create", item, external_id, digest, parent)
        elif known.content_hash == digest:
            if known.run_id != self.run_id:
                self.unchanged += 1
            return None
        else:
            decision = Decision("update", update_form(item), external_id, digest, parent)
        self.planned[decision.op] += 1
        return decision

    def missing(self) -> Iterator[Decision]:
        """Delete decisions for entries the last sync left in Klaviyo that this source no longer has."""
        for external_id, known in self.known.items():
            if known.deleted or external_id in self.seen:
                continue
            if self.sources is not None and known.run_id not in self.sources:
                continue  # another source (mapping) sent it: not this one's to delete
            self.planned["delete"] += 1
            yield Decision("delete", delete_form(self.item_type, known.klaviyo_id), external_id, "")
