"""The list membership and subscription targets (registered in services/targets.py): envelope parts,
and profile ids for membership rows given by email or phone number."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from klaviyo import endpoints as ep
from klaviyo.batching import Batch, RowRejection, batches
from klaviyo.client import KlaviyoClient
from klaviyo.errors import KlaviyoError
from klaviyo.jobs import settle
from klaviyo.sender import send_batch
from klaviyo.serialization import dumps_kept, loads
from models import SyncRun
from sync.mapping import Mapping as MappingSpec

CUSTOM_SOURCE_MAX = 200
# Contacts per lookup: Klaviyo's largest page of profiles, so one `any(email,[...])` is one request.
LOOKUP_PER_CALL = 100
# Profiles created at once for an add (profile-import is one profile per call, 75/s shared).
CREATE_AT_ONCE = 8
# From this many unknown people in one batch on, one bulk import job (a few seconds to settle)
# beats single creates (750 a minute).
BULK_CREATE_FROM = 50
# Seconds before each look for the profiles an import job made (some may not be searchable at once).
LOOKUP_PAUSES = (0.0, 2.0, 5.0)
NO_PROFILE = "no_profile"
# (field, values) -> {value: profile id}: KlaviyoClient.find_profile_ids, or find_list_members for a list.
Finder = Callable[[str, list[str]], Awaitable[dict[str, str]]]


def list_id(run: SyncRun, spec: MappingSpec) -> str | None:
    """The list a run works on: chosen when the run started, else the mapping's own."""
    return str(run.options.get("list_id") or spec.target.list_id or "").strip() or None


def list_path(run: SyncRun, spec: MappingSpec) -> dict[str, str]:
    """``{"id": list}`` for /api/lists/{id}/relationships/profiles.

    services.lists refuses to start a membership run without a list; "-" makes Klaviyo answer 404.
    """
    return {"id": list_id(run, spec) or "-"}


def subscribe_list(run: SyncRun, spec: MappingSpec) -> dict[str, Any] | None:
    """The subscription job's ``list`` relationship; none means the account's default consent only."""
    chosen = list_id(run, spec)
    return {"list": {"data": {"type": "list", "id": chosen}}} if chosen else None


def subscribe_options(run: SyncRun, spec: MappingSpec) -> dict[str, Any] | None:
    """Job attributes: ``historical_import`` (the mapping's mode: rows carry consented_at) and the source."""
    options: dict[str, Any] = {}
    if spec.options.historical_import:
        options["historical_import"] = True
    source = str(run.options.get("custom_source") or "").strip()
    if source:
        options["custom_source"] = source[:CUSTOM_SOURCE_MAX]
    return options or None


# -- profile ids for membership rows given by email or phone number ----------------------------


def _email_key(contact: dict[str, Any]) -> str:
    return str(contact.get("email") or "").lower()


async def _lookup(find: Finder, field: str, values: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    unique = list(dict.fromkeys(values))
    for start in range(0, len(unique), LOOKUP_PER_CALL):
        found.update(await find(field, unique[start : start + LOOKUP_PER_CALL]))
    return found


async def ids_for(find: Finder, contacts: Sequence[dict[str, Any]]) -> list[str | None]:
    """The profile id of each contact (by email, else phone number) or None; 100 contacts per request."""
    by_email = await _lookup(find, "email", [_email_key(c) for c in contacts if c.get("email")])
    phones = [
        str(c["phone_number"]) for c in contacts if c.get("phone_number") and _email_key(c) not in by_email
    ]
    by_phone = await _lookup(find, "phone_number", phones) if phones else {}
    return [by_email.get(_email_key(c)) or by_phone.get(str(c.get("phone_number") or "")) for c in contacts]


def no_profile_message(contact: dict[str, Any]) -> str:
    return "no profile with this email" if contact.get("email") else "no profile with this phone number"


async def resolve_contacts(
    client: KlaviyoClient, contacts: Sequence[dict[str, Any]], *, create_missing: bool
) -> None:
    """Set ``profile_id`` on each contact dict, or ``error``: looked up 100 at a time; those without a
    profile are created (identifier only, no consent) when adding, and refused when removing."""
    pending = [c for c in contacts if not c.get("profile_id") and not c.get("error")]
    for contact, found in zip(pending, await ids_for(client.find_profile_ids, pending), strict=True):
        if found:
            contact["profile_id"] = found
    missing = [c for c in pending if not c.get("profile_id")]
    if not create_missing:
        for contact in missing:
            contact["error"] = no_profile_message(contact)
        return

    if len(missing) >= BULK_CREATE_FROM:
        await _create_in_bulk(client, missing)
        return

    async def create(contact: dict[str, Any]) -> None:
        try:
            contact["profile_id"] = await client.import_profile(_identifiers(contact))
        except KlaviyoError as exc:
            # Only a refusal of this profile is the row's problem; keys, limits and outages stop the job.
            if exc.status not in (400, 409):
                raise
            contact["error"] = f"Klaviyo refused the profile: {exc}"

    for start in range(0, len(missing), CREATE_AT_ONCE):
        await asyncio.gather(*(create(c) for c in missing[start : start + CREATE_AT_ONCE]))


def _identifiers(contact: dict[str, Any]) -> dict[str, Any]:
    return {k: contact[k] for k in ("email", "phone_number") if contact.get(k)}


async def _create_in_bulk(client: KlaviyoClient, missing: list[dict[str, Any]]) -> None:
    """Many people Klaviyo does not know: one profile import job per 10,000 (single creates go at
    750 a minute), then their new ids looked up like anyone else's, 100 per request."""
    endpoint = ep.BULK_PROFILES
    prefix, suffix = endpoint.envelope_parts()
    scale = client.limiter.time_scale if client.limiter is not None else 1.0
    items = [(index, {"type": "profile", "attributes": _identifiers(c)}) for index, c in enumerate(missing)]
    for batch in batches(items, endpoint):
        outcome = await send_batch(client, endpoint, batch, prefix=prefix, suffix=suffix)
        outcome = await settle(client, endpoint, outcome, first_delay=0.5 / scale, max_delay=15.0 / scale)
        for rejection in outcome.rejected:
            missing[rejection.row_ref]["error"] = f"Klaviyo refused the profile: {rejection.detail}"
    waiting = [c for c in missing if not c.get("error")]
    # A finished job's profiles may take a moment to be searchable: look again before giving up.
    for pause in LOOKUP_PAUSES:
        await asyncio.sleep(pause / scale)
        for contact, found in zip(waiting, await ids_for(client.find_profile_ids, waiting), strict=True):
            if found:
                contact["profile_id"] = found
        waiting = [c for c in waiting if not c.get("profile_id")]
        if not waiting:
            return
    for contact in waiting:
        contact["error"] = "Klaviyo's import job ended but this profile could not be found; retry the row"


async def resolve_batch(client: KlaviyoClient, batch: Batch, *, create_missing: bool) -> Batch:
    """A membership batch whose email/phone items are replaced by profile ids; rows that have no
    profile (or could not be created) move to the batch's rejections."""
    decoded = [loads(item) for item in batch.items]
    contacts = [
        {"profile_id": d.get("id"), **{k: v for k, v in (d.get("attributes") or {}).items() if v}}
        for d in decoded
    ]
    await resolve_contacts(client, contacts, create_missing=create_missing)
    resolved = Batch(seq=batch.seq, rejected=list(batch.rejected))
    for ref, contact in zip(batch.row_refs, contacts, strict=True):
        if contact.get("error") or not contact.get("profile_id"):
            column = "email" if contact.get("email") else "phone_number"
            message = contact.get("error") or no_profile_message(contact)
            resolved.rejected.append(RowRejection(ref, NO_PROFILE, message, f"/data/attributes/{column}"))
            continue
        resolved.row_refs.append(ref)
        resolved.items.append(dumps_kept({"type": "profile", "id": contact["profile_id"]}))
    resolved.size = batch.size - sum(map(len, batch.items)) + sum(map(len, resolved.items))
    return resolved


async def add_by_contact(client: KlaviyoClient, batch: Batch) -> Batch:
    return await resolve_batch(client, batch, create_missing=True)


async def remove_by_contact(client: KlaviyoClient, batch: Batch) -> Batch:
    return await resolve_batch(client, batch, create_missing=False)
