"""Consent changes made in Klaviyo: which metrics carry them, how an event becomes a change, and the
signatures on system webhooks coming in and on the store webhook going out."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Klaviyo's own consent metrics, found by name with Get Metrics: kind and channel of each.
CONSENT_METRICS: dict[str, tuple[str, str]] = {
    "Subscribed to Email Marketing": ("subscribed", "email"),
    "Unsubscribed from Email Marketing": ("unsubscribed", "email"),
    "Subscribed to SMS Marketing": ("subscribed", "sms"),
    "Unsubscribed from SMS Marketing": ("unsubscribed", "sms"),
    "Marked Email as Spam": ("spam_complaint", "email"),
    "Bounced Email": ("bounced", "email"),
}
KINDS = ("subscribed", "unsubscribed", "spam_complaint", "bounced")
CHANNELS = ("email", "sms")
# Changes that mean "stop marketing to this person on this channel".
OPT_OUT_KINDS = frozenset({"unsubscribed", "spam_complaint", "bounced"})
# Klaviyo's delivery timestamp may differ from our clock by this much before a delivery is refused
# as a replay (our choice; the guide asks receivers to verify the timestamp, not a window).
WEBHOOK_TOLERANCE_S = 300


def topic_for(metric_name: str) -> str:
    """The system webhook topic id of a Klaviyo metric: ``event:klaviyo.marked_email_as_spam``."""
    return "event:klaviyo." + re.sub(r"[^a-z0-9]+", "_", metric_name.lower()).strip("_")


CONSENT_TOPICS: dict[str, str] = {topic_for(name): name for name in CONSENT_METRICS}


@dataclass(frozen=True)
class Change:
    """One consent change read from a Klaviyo event (Events API or a system webhook)."""

    event_id: str
    kind: str
    channel: str
    metric: str
    occurred_at: datetime
    email: str | None = None
    phone_number: str | None = None
    profile_id: str | None = None
    external_id: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)


def parse_when(value: Any) -> datetime | None:
    """An ISO 8601 datetime or Unix seconds as an aware UTC datetime, or None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return datetime.fromtimestamp(float(text), UTC)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _clip(value: Any, size: int) -> str | None:
    return str(value)[:size] if value not in (None, "") else None


def change_from_event(
    event: dict[str, Any], metric_name: str, profile: dict[str, Any] | None = None
) -> Change | None:
    """The change an event resource (Get Event shape) stands for; None when the metric is not one
    of the consent metrics or the event has no id or time."""
    if metric_name not in CONSENT_METRICS or not event.get("id"):
        return None
    kind, channel = CONSENT_METRICS[metric_name]
    attrs = event.get("attributes") or {}
    when = parse_when(attrs.get("datetime")) or parse_when(attrs.get("timestamp"))
    if when is None:
        return None
    profile_ref = ((event.get("relationships") or {}).get("profile") or {}).get("data") or {}
    pattrs = (profile or {}).get("attributes") or {}
    props = attrs.get("event_properties") or {}
    return Change(
        event_id=str(event["id"])[:64],
        kind=kind,
        channel=channel,
        metric=metric_name,
        occurred_at=when,
        email=_clip(pattrs.get("email") or props.get("$email") or props.get("email"), 320),
        phone_number=_clip(pattrs.get("phone_number") or props.get("$phone_number"), 32),
        profile_id=_clip(profile_ref.get("id") or (profile or {}).get("id"), 64),
        external_id=_clip(pattrs.get("external_id"), 64),
        properties={k: v for k, v in props.items() if isinstance(v, str | int | float | bool)},
    )


def klaviyo_signature(secret: str, body: bytes, timestamp: str) -> str:
    """The hex HMAC-SHA256 Klaviyo puts in ``Klaviyo-Signature``: the raw body with the
    ``Klaviyo-Timestamp`` header value appended, keyed with the webhook's secret key."""
    mac = hmac.new(secret.encode(), body, hashlib.sha256)
    mac.update(timestamp.encode())
    return mac.hexdigest()


def check_klaviyo_delivery(
    secret: str, body: bytes, timestamp: str | None, signature: str | None, now: datetime
) -> str | None:
    """Why a system webhook delivery must be refused, or None when it is genuine and fresh.

    As Klaviyo's guide "Working with system webhooks" says
    (https://developers.klaviyo.com/en/docs/working_with_system_webhooks): compute the HMAC-SHA256
    of the raw request body followed by the ``Klaviyo-Timestamp`` header with the webhook's secret
    key, hex-encode it, and compare it with ``Klaviyo-Signature`` in constant time. A timestamp
    further than ``WEBHOOK_TOLERANCE_S`` from now is refused so a captured delivery cannot be replayed.
    """
    if not timestamp or not signature:
        return "missing Klaviyo-Signature or Klaviyo-Timestamp header"
    expected = klaviyo_signature(secret, body, timestamp)
    if not hmac.compare_digest(expected, signature.strip().lower()):
        return "signature does not match"
    when = parse_when(timestamp)
    if when is None:
        return "unreadable Klaviyo-Timestamp"
    if abs((now - when).total_seconds()) > WEBHOOK_TOLERANCE_S:
        return "stale Klaviyo-Timestamp (more than 5 minutes from the console's clock)"
    return None


def outbound_signature(secret: str, body: bytes, timestamp: str) -> str:
    """``sha256=<hex>`` of ``<timestamp>.<raw body>``: the store checks the console's deliveries with
    it (the same scheme the ingest API asks stores to use)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"
