"""List membership target: one row -> ``{"type": "profile", "id": ...}`` (no consent change)."""

from __future__ import annotations

from collections.abc import Mapping as RowMapping
from typing import Any

from sync.issues import RuleError
from sync.mapping import Mapping
from sync.targets.common import Item, check_targets


class ListMembershipBuilder:
    """Adding to a list needs Klaviyo profile ids; rows keyed by email go through the profile import
    target with the list as its relationship instead."""

    def __init__(self, mapping: Mapping) -> None:
        check_targets(mapping.targets(), frozenset({"id"}), (), "List membership")

    def build(self, values: dict[str, Any], row: RowMapping[str, Any]) -> list[Item]:
        """One membership item."""
        profile_id = values.get("id")
        if not profile_id:
            raise RuleError(
                "missing_profile_id",
                "list membership needs the Klaviyo profile id; "
                "import profiles by email with the list instead",
                "id",
            )
        return [{"type": "profile", "id": str(profile_id)}]
