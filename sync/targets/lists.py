"""List membership target: one row -> a profile reference (no consent change).

A row gives the Klaviyo profile id, or an email / phone number that the send step resolves to the
profile id (services.list_targets), since the membership endpoint takes ids only.
"""

from __future__ import annotations

from collections.abc import Mapping as RowMapping
from typing import Any

from sync.issues import RuleError
from sync.mapping import Mapping
from sync.targets.common import Item, check_targets
from sync.transforms import email, to_e164

ALLOWED = frozenset({"id", "email", "phone_number"})


class ListMembershipBuilder:
    """``{"type": "profile", "id": ...}``, or the row's email / phone (normalised) to be resolved."""

    def __init__(self, mapping: Mapping) -> None:
        check_targets(mapping.targets(), ALLOWED, (), "List membership")
        self.region = mapping.options.default_phone_region or "US"

    def build(self, values: dict[str, Any], row: RowMapping[str, Any]) -> list[Item]:
        """One membership item."""
        profile_id = values.get("id")
        if profile_id:
            return [{"type": "profile", "id": str(profile_id)}]
        attributes: dict[str, str] = {}
        if values.get("email"):
            attributes["email"] = email(values["email"])
        if values.get("phone_number"):
            attributes["phone_number"] = to_e164(values["phone_number"], self.region)
        if not attributes:
            raise RuleError(
                "missing_profile_id",
                "list membership needs the Klaviyo profile id, an email or a phone number",
                "id",
            )
        return [{"type": "profile", "attributes": attributes}]
