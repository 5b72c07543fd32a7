"""Request-body validation: the SDK's pydantic models for shape, plus Klaviyo's own data rules."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Any, get_args

from openapi_client import models as sdk
from pydantic import BaseModel, ValidationError

from simulator.config import MAX_STRING_BYTES

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
PHONE_RE = re.compile(r"^\+[1-9]\d{6,14}$")
MIN_EVENT_TIME = datetime(1990, 1, 1, tzinfo=UTC)
MAX_EVENT_PROPERTIES = 400

# The SDK model for each body the simulator accepts (see klaviyo-api.md).
MODELS: dict[str, type[BaseModel]] = {
    "event": sdk.EventCreateQueryV2,
    "events_bulk": sdk.EventsBulkCreateJob,
    "profile_import": sdk.ProfileUpsertQuery,
    "profile_update": sdk.ProfilePartialUpdateQuery,
    "profile_bulk_import": sdk.ProfileImportJobCreateQuery,
    "subscribe": sdk.SubscriptionCreateJobCreateQuery,
    "unsubscribe": sdk.SubscriptionDeleteJobCreateQuery,
    "suppress": sdk.SuppressionCreateJobCreateQuery,
    "list_create": sdk.ListCreateQuery,
    "list_update": sdk.ListPartialUpdateQuery,
    "list_members_add": sdk.ListMembersAddQuery,
    "list_members_delete": sdk.ListMembersDeleteQuery,
    "catalog_item_create": sdk.CatalogItemCreateJobCreateQuery,
    "catalog_item_update": sdk.CatalogItemUpdateJobCreateQuery,
    "catalog_item_delete": sdk.CatalogItemDeleteJobCreateQuery,
    "catalog_variant_create": sdk.CatalogVariantCreateJobCreateQuery,
    "catalog_variant_update": sdk.CatalogVariantUpdateJobCreateQuery,
    "catalog_variant_delete": sdk.CatalogVariantDeleteJobCreateQuery,
    "catalog_category_create": sdk.CatalogCategoryCreateJobCreateQuery,
    "catalog_category_update": sdk.CatalogCategoryUpdateJobCreateQuery,
    "catalog_category_delete": sdk.CatalogCategoryDeleteJobCreateQuery,
}


class Problem(Exception):
    """One or more JSON:API errors to answer with (raised by handlers, rendered by the app)."""

    def __init__(
        self,
        status: int,
        errors: list[dict[str, Any]],
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(errors[0].get("detail") if errors else str(status))
        self.status = status
        self.errors = errors
        self.headers = headers or []


def error(
    status: int,
    code: str,
    detail: str,
    pointer: str | None = None,
    title: str | None = None,
    meta: dict[str, Any] | None = None,
    parameter: str | None = None,
) -> dict[str, Any]:
    """One JSON:API error object (``parameter``: the query parameter at fault)."""
    from simulator.state import new_uuid

    source: dict[str, str] = {"pointer": pointer} if pointer is not None else {}
    if parameter is not None:
        source["parameter"] = parameter
    item: dict[str, Any] = {
        "id": new_uuid(),
        "status": status,
        "code": code,
        "title": title or _TITLES.get(status, "Error."),
        "detail": detail,
        "source": source,
    }
    if meta:
        item["meta"] = meta
    return item


_TITLES = {
    400: "Invalid input.",
    401: "Authentication credentials were not provided.",
    403: "You do not have permission to perform this action.",
    404: "Not found.",
    405: "Method not allowed.",
    409: "Conflict.",
    413: "Request entity too large.",
    429: "Request was throttled.",
    500: "A server error occurred.",
    502: "Bad gateway.",
    503: "Service unavailable.",
    504: "Gateway timeout.",
}


def invalid(detail: str, pointer: str | None = None) -> dict[str, Any]:
    """A 400 'invalid' error object."""
    return error(400, "invalid", detail, pointer)


def validate_shape(kind: str, body: Any) -> None:
    """Validate ``body`` with the SDK model for ``kind``; raise Problem(400) naming each bad field,
    unknown fields included."""
    model = MODELS[kind]
    try:
        # model_validate on the whole dict runs the compiled validator once: the fastest path.
        model.model_validate(body)
        unknown = unknown_fields(model, body)
    except ValidationError as exc:
        errors = []
        seen: set[str] = set()
        for err in exc.errors(include_url=False, include_input=False):
            pointer = loc_to_pointer(body, err["loc"])
            if pointer in seen:
                continue  # union branches (float | int) report the same field twice
            seen.add(pointer)
            errors.append(invalid(f"{err['msg']}", pointer))
        raise Problem(400, errors) from None
    if unknown:
        raise Problem(400, unknown)


# Klaviyo refuses a field its schema does not have (the SDK's models let them through): a 400
# "'last_name' is not a valid field for the resource 'profile'." pointing at the field, as met on a
# subscription job's profile (github.com/verbb/formie issue 1986) and on other resources.
_Fields = dict[str, tuple[type[BaseModel], ...]]


def _models_in(annotation: Any) -> tuple[type[BaseModel], ...]:
    found: list[type[BaseModel]] = []
    stack = [annotation]
    while stack:
        item = stack.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            found.append(item)
        else:
            stack.extend(get_args(item))
    return tuple(found)


@cache
def _fields_of(model: type[BaseModel]) -> _Fields | None:
    """Known keys of ``model`` and the models each may hold; None for a free-form object."""
    if "actual_instance" in model.model_fields:
        # A oneOf wrapper: a key is known when one of the variants knows it.
        merged: dict[str, set[type[BaseModel]]] = {}
        for variant in _models_in(model.model_fields["actual_instance"].annotation):
            for key, subs in (_fields_of(variant) or {}).items():
                merged.setdefault(key, set()).update(subs)
        return {key: tuple(subs) for key, subs in merged.items()} or None
    return {(info.alias or name): _models_in(info.annotation) for name, info in model.model_fields.items()}


@cache
def _known(models: tuple[type[BaseModel], ...]) -> _Fields | None:
    merged: dict[str, set[type[BaseModel]]] = {}
    for model in models:
        fields = _fields_of(model)
        if fields is None:
            return None
        for key, subs in fields.items():
            merged.setdefault(key, set()).update(subs)
    return {key: tuple(sorted(subs, key=lambda m: m.__name__)) for key, subs in merged.items()}


def _unknown(
    models: tuple[type[BaseModel], ...], node: Any, path: list[str], resource: str, out: list[dict[str, Any]]
) -> None:
    if isinstance(node, list):
        for i, entry in enumerate(node):
            if isinstance(entry, dict | list):
                path.append(str(i))
                _unknown(models, entry, path, resource, out)
                path.pop()
        return
    if not isinstance(node, dict) or not models:
        return
    known = _known(models)
    if known is None:
        return
    kind = node.get("type")
    resource = kind if isinstance(kind, str) else resource
    for key, value in node.items():
        subs = known.get(key)
        if subs is None:
            detail = f"'{key}' is not a valid field for the resource '{resource}'."
            pointer = "/" + "/".join([*path, key])
            out.append(error(400, "invalid", detail, pointer, title="Invalid input."))
        elif subs and isinstance(value, dict | list):
            path.append(key)
            _unknown(subs, value, path, resource, out)
            path.pop()


def unknown_fields(model: type[BaseModel], body: Any) -> list[dict[str, Any]]:
    """A 400 error for every field of ``body`` that ``model``'s schema does not have."""
    out: list[dict[str, Any]] = []
    _unknown((model,), body, [], "request", out)
    return out


def loc_to_pointer(body: Any, loc: tuple[Any, ...]) -> str:
    """Turn a pydantic error location into a JSON pointer into the request body.

    Pydantic appends union-branch and type names to the location; we keep only the segments that
    walk the real document (plus a final missing key).
    """
    parts: list[str] = []
    node = body
    for seg in loc:
        if isinstance(node, dict) and isinstance(seg, str):
            parts.append(seg)
            if seg not in node:
                break
            node = node[seg]
        elif isinstance(node, list) and isinstance(seg, int):
            parts.append(str(seg))
            if seg >= len(node):
                break
            node = node[seg]
        else:
            break
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts) if parts else ""


def may_hold_long_string(raw: bytes) -> bool:
    """A cheap pre-check on the raw body, so the deep walk runs only when it could find something.

    A JSON string's raw form is at least as long as its UTF-8 bytes, and it holds no bare quote;
    so unless some quote-free run is over 100 KB (or escaped quotes split one), none is too long.
    """
    if len(raw) <= MAX_STRING_BYTES:
        return False
    if b'\\"' in raw:
        return True
    return max(map(len, raw.split(b'"'))) > MAX_STRING_BYTES


def long_string_pointer(value: Any, pointer: str) -> str | None:
    """The pointer of the first string longer than 100 KB inside ``value``, if any."""
    path = _find_long_string(value)
    if path is None:
        return None
    return pointer + "".join(f"/{p}" for p in path)


def _find_long_string(value: Any) -> list[Any] | None:
    # Path segments are built only on the way back from a hit, so the common case stays cheap.
    if isinstance(value, str):
        # len() counts characters; UTF-8 needs at least that many bytes and at most four each.
        if len(value) * 4 > MAX_STRING_BYTES and len(value.encode()) > MAX_STRING_BYTES:
            return []
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str | dict | list):
                found = _find_long_string(item)
                if found is not None:
                    return [key, *found]
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str | dict | list):
                found = _find_long_string(item)
                if found is not None:
                    return [i, *found]
    return None


@lru_cache(maxsize=8192)
def parse_time(value: str) -> datetime | None:
    """Parse an ISO 8601 timestamp; naive times are UTC. None when unparseable.

    Cached because a bulk request parses each time twice (validate, then store).
    """
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def event_time_problem(value: str | None, now: datetime) -> str | None:
    """Why an event time is rejected (after 1990, at most a year ahead), or None."""
    if value is None:
        return None
    parsed = parse_time(value)
    if parsed is None:
        return "time is not a valid ISO 8601 datetime"
    if parsed < MIN_EVENT_TIME:
        return "time must be after the year 1990"
    if parsed > now + timedelta(days=365):
        return "time can be at most 1 year in the future"
    return None


def email_ok(value: str) -> bool:
    """A plausible email address (Klaviyo's own check is stricter in places)."""
    return bool(EMAIL_RE.match(value))


def phone_ok(value: str) -> bool:
    """E.164: a plus, a non-zero digit, 7 to 15 digits in all."""
    return bool(PHONE_RE.match(value))


def identifier_problems(attrs: dict[str, Any], profile_id: Any, pointer: str) -> list[dict[str, Any]]:
    """Errors for a profile's identifiers: at least one present, email syntax, E.164 phone."""
    problems = []
    email = attrs.get("email")
    phone = attrs.get("phone_number")
    external_id = attrs.get("external_id")
    if not (email or phone or external_id or profile_id or attrs.get("anonymous_id")):
        problems.append(
            invalid(
                "A profile needs at least one identifier: email, phone_number, external_id or id",
                pointer,
            )
        )
    if email is not None and not email_ok(email):
        problems.append(invalid(f"Invalid email address: {email!r}", f"{pointer}/email"))
    if phone is not None and not phone_ok(phone):
        problems.append(invalid(f"Invalid phone number {phone!r}: must be E.164", f"{pointer}/phone_number"))
    if external_id is not None and len(external_id) > 64:
        problems.append(invalid("external_id is longer than 64 characters", f"{pointer}/external_id"))
    return problems
