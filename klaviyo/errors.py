"""Exceptions parsed from Klaviyo's JSON:API errors, one class per meaning."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from klaviyo.serialization import loads

_INDEX = re.compile(r"/data/(\d+)(?:/|$)")
# A pointer into the items array itself ("/3/attributes/email"): item-relative with its index.
_LEADING_INDEX = re.compile(r"^/(\d+)(?:/|$)")


def item_index(pointer: str | None) -> int | None:
    """The item index a bulk error pointer names: the first ``/data/<n>`` integer, or a leading
    ``/<n>`` of a pointer into the items array; None when it names no index (e.g. item-relative
    ``/data/attributes/email``, whose item must be found another way)."""
    if not pointer:
        return None
    match = _INDEX.search(pointer) or _LEADING_INDEX.match(pointer)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class ErrorDetail:
    """One entry of a JSON:API ``errors`` array."""

    status: int
    code: str
    title: str
    detail: str
    pointer: str | None = None
    meta: Mapping[str, Any] | None = None

    @property
    def index(self) -> int | None:
        return item_index(self.pointer)


class KlaviyoError(Exception):
    """Base class: anything that went wrong talking to Klaviyo."""

    retryable = False

    def __init__(self, message: str, status: int | None = None, errors: list[ErrorDetail] | None = None):
        super().__init__(message)
        self.status = status
        self.errors = errors or []


class ValidationFailed(KlaviyoError):
    """400: the payload is invalid; never resent as-is."""

    @property
    def items(self) -> list[tuple[str | None, int | None, str, str]]:
        """(pointer, item index, code, detail) for each error."""
        return [(e.pointer, e.index, e.code, e.detail) for e in self.errors]


class AccessDenied(KlaviyoError):
    """401/403: the key is wrong, revoked or lacks a scope; the run must stop."""


class AuthError(AccessDenied):
    """401: the key is missing, wrong or revoked."""


class ScopeError(AccessDenied):
    """403: the key lacks the scope this endpoint needs."""


class NotFound(KlaviyoError):
    """404: the resource (list, profile, job) does not exist."""


class Conflict(KlaviyoError):
    """409: a conflict, e.g. a duplicate profile."""

    @property
    def duplicate_profile_id(self) -> str | None:
        for error in self.errors:
            if error.meta and error.meta.get("duplicate_profile_id"):
                return str(error.meta["duplicate_profile_id"])
        return None


DuplicateProfile = Conflict


class PayloadTooLarge(ValidationFailed):
    """413: the body exceeds Klaviyo's size limit."""


class RateLimited(KlaviyoError):
    """429: over a window; retry after ``retry_after`` seconds."""

    retryable = True

    def __init__(self, message: str, retry_after: float, errors: list[ErrorDetail] | None = None):
        super().__init__(message, 429, errors)
        self.retry_after = retry_after


class ServerError(KlaviyoError):
    """5xx: Klaviyo failed; retry with backoff."""

    retryable = True


class NetworkError(KlaviyoError):
    """Timeout, dropped connection, or a 2xx whose body is not JSON; retry with backoff."""

    retryable = True


def parse_errors(body: bytes, status: int) -> list[ErrorDetail]:
    """The ``errors`` array of a JSON:API error body; tolerant of non-JSON bodies."""
    try:
        doc = loads(body) if body else {}
    except ValueError:
        return [
            ErrorDetail(status, "unparseable", "Unparseable error body", body[:200].decode(errors="replace"))
        ]
    raw = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(raw, list):
        return []
    details = []
    for entry in raw:
        if not isinstance(entry, dict):
            continue
        source = entry.get("source") or {}
        pointer = source.get("pointer") if isinstance(source, dict) else None
        meta = entry.get("meta")
        try:
            entry_status = int(entry.get("status", status))
        except (TypeError, ValueError):
            entry_status = status
        details.append(
            ErrorDetail(
                status=entry_status,
                code=str(entry.get("code") or ""),
                title=str(entry.get("title") or ""),
                detail=str(entry.get("detail") or ""),
                pointer=str(pointer) if pointer else None,
                meta=meta if isinstance(meta, dict) else None,
            )
        )
    return details


def parse_retry_after(value: str | None, default: float = 1.0) -> float:
    """Seconds from a Retry-After header (may be fractional when time-scaled)."""
    if value is None:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        return default


def error_for_response(status: int, body: bytes, headers: Mapping[str, str]) -> KlaviyoError:
    """The exception that a non-2xx response means."""
    errors = parse_errors(body, status)
    summary = (
        "; ".join(f"{e.code}: {e.detail}" if e.detail else e.code for e in errors[:3]) or f"HTTP {status}"
    )
    message = f"Klaviyo {status}: {summary}"
    if status == 400 or status == 422:
        return ValidationFailed(message, status, errors)
    if status == 401:
        return AuthError(f"Klaviyo rejected the API key (401): {summary}", status, errors)
    if status == 403:
        return ScopeError(f"The API key lacks a required scope (403): {summary}", status, errors)
    if status == 404:
        return NotFound(message, status, errors)
    if status == 409:
        return Conflict(message, status, errors)
    if status == 413:
        return PayloadTooLarge(message, status, errors)
    if status == 429:
        return RateLimited(message, parse_retry_after(headers.get("retry-after")), errors)
    if status >= 500:
        return ServerError(message, status, errors)
    return KlaviyoError(message, status, errors)
