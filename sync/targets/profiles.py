"""Profile target: one row -> one profile resource object for the bulk import job."""

from __future__ import annotations

from collections.abc import Mapping as RowMapping
from typing import Any

from sync.compiler import EMPTY
from sync.issues import RuleError
from sync.mapping import Mapping
from sync.targets.common import Item, check_targets, split_target

IDENTIFIERS = frozenset({"email", "phone_number", "external_id", "id"})
ATTRIBUTES = frozenset({"first_name", "last_name", "organization", "locale", "title", "image"})
LOCATION = frozenset(
    {"address1", "address2", "city", "country", "latitude", "longitude", "region", "zip", "timezone", "ip"}
)
ALLOWED = IDENTIFIERS | ATTRIBUTES | frozenset(f"location.{name}" for name in LOCATION)
EXTERNAL_ID_MAX = 64


class ProfileBuilder:
    """Builds ``{"type": "profile", "attributes": {...}}``; empty cells leave fields unchanged.

    With ``options.clear_empty`` an empty cell sends null, which clears the field in Klaviyo;
    identifiers are never cleared.
    """

    def __init__(self, mapping: Mapping) -> None:
        targets = mapping.targets()
        check_targets(targets, ALLOWED, ("properties.",), "Profile")
        self.slots = [(t, split_target(t)) for t in targets if t != "id"]

    def build(self, values: dict[str, Any], row: RowMapping[str, Any]) -> list[Item]:
        """One profile item (or RuleError for an external_id Klaviyo would truncate)."""
        external_id = values.get("external_id")
        if isinstance(external_id, str) and len(external_id) > EXTERNAL_ID_MAX:
            raise RuleError(
                "external_id_too_long",
                f"external_id has {len(external_id)} characters; Klaviyo keeps {EXTERNAL_ID_MAX} and "
                "would silently truncate it, merging different customers",
                "external_id",
            )
        attributes: dict[str, Any] = {}
        for target, path in self.slots:
            value = values.get(target, EMPTY)
            if value is EMPTY:
                if target in IDENTIFIERS or target not in values:
                    continue
                value = None  # explicit clear
            node = attributes
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
        item: Item = {"type": "profile", "attributes": attributes}
        profile_id = values.get("id")
        if profile_id is not None and profile_id is not EMPTY:
            item["id"] = profile_id
        return [item]
