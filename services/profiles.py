"""One profile at a time, in real time (ingest, single edits): POST /api/profile-import.

Backfills go through bulk import runs (services/targets.py, kind "profile"); this is the path for
one profile that must land now. Upsert semantics as in Klaviyo: a field sent as ``None`` clears it,
a field left out is unchanged.
"""

from __future__ import annotations

from typing import Any

from klaviyo.client import KlaviyoClient
from sync.targets.profiles import EXTERNAL_ID_MAX
from sync.validation import PROFILE_IDENTIFIERS


class ProfileRefused(ValueError):
    """The profile cannot be sent as it is; the message says why."""


def check_profile(attributes: dict[str, Any], profile_id: str | None = None) -> None:
    """Refuse what Klaviyo would refuse or silently damage: no identifier, an over-long external_id."""
    if not profile_id and not any(attributes.get(name) for name in PROFILE_IDENTIFIERS):
        raise ProfileRefused("a profile needs an email, phone number, external id or Klaviyo id")
    external_id = attributes.get("external_id")
    if isinstance(external_id, str) and len(external_id) > EXTERNAL_ID_MAX:
        raise ProfileRefused(
            f"external_id has {len(external_id)} characters; Klaviyo keeps {EXTERNAL_ID_MAX} and would "
            "silently truncate it"
        )


async def upsert_profile(
    client: KlaviyoClient, attributes: dict[str, Any], profile_id: str | None = None
) -> str:
    """Create or update one profile and return its Klaviyo id.

    A 409 (another profile already owns an identifier) is resolved by the client, which updates the
    profile Klaviyo names; 429s and 5xx are retried, other 4xx raise.
    """
    check_profile(attributes, profile_id)
    return await client.import_profile(attributes, profile_id)
