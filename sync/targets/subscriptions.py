"""Subscription target: one row -> a profile with consent per channel for the subscribe job."""

from __future__ import annotations

from collections.abc import Mapping as RowMapping
from datetime import UTC, datetime
from typing import Any

from sync.issues import NO_CONSENT, RuleError, SkipRow
from sync.mapping import Mapping
from sync.targets.common import Item, check_targets

ALLOWED = frozenset({"email", "phone_number", "consented_at", "consent.email", "consent.sms"})


class SubscriptionBuilder:
    """Sets ``SUBSCRIBED`` marketing consent on the mapping's channels.

    ``consent.email`` / ``consent.sms`` (booleans) let a row opt out of a channel;
    ``options.sms_transactional`` adds SMS transactional consent next to SMS marketing. With
    ``options.historical_import`` Klaviyo skips double opt-in and needs ``consented_at`` in the past;
    the job envelope must then carry ``historical_import: true`` (klaviyo.batching reads the option).
    """

    def __init__(self, mapping: Mapping) -> None:
        check_targets(mapping.targets(), ALLOWED, (), "Subscription")
        self.channels = list(mapping.options.channels)
        self.historical = mapping.options.historical_import
        self.sms_transactional = mapping.options.sms_transactional
        # A mapped consent column that is empty on a row means no consent on that row.
        targets = mapping.targets()
        self.email_default = "consent.email" not in targets
        self.sms_default = "consent.sms" not in targets
        self.consent_column = next(
            (_column_of(rule.source) for rule in mapping.fields if rule.target.startswith("consent.")), None
        )

    def build(
        self, values: dict[str, Any], row: RowMapping[str, Any], now: datetime | None = None
    ) -> list[Item]:
        """One subscription item or RuleError explaining what consent is missing."""
        email, phone = values.get("email"), values.get("phone_number")
        marketing: dict[str, Any] = {"consent": "SUBSCRIBED"}
        if self.historical:
            consented_at = values.get("consented_at")
            if not consented_at:
                raise RuleError(
                    "consented_at_missing",
                    "a historical import needs consented_at (when the person gave consent) on every row",
                    "consented_at",
                )
            if _parse_time(consented_at) > (now or datetime.now(UTC)):
                raise RuleError(
                    "consented_at_future", f"consented_at {consented_at} is in the future", "consented_at"
                )
            marketing["consented_at"] = consented_at
        subscriptions: dict[str, Any] = {}
        if "email" in self.channels and email and values.get("consent.email", self.email_default):
            subscriptions["email"] = {"marketing": dict(marketing)}
        if "sms" in self.channels and phone and values.get("consent.sms", self.sms_default):
            subscriptions["sms"] = {"marketing": dict(marketing)}
            if self.sms_transactional:
                subscriptions["sms"]["transactional"] = dict(marketing)
        if not subscriptions:
            reachable = ("email" in self.channels and email) or ("sms" in self.channels and phone)
            if reachable:
                # The person said no (or left the consent column empty): not an error, never retried.
                raise SkipRow(self.consent_column, NO_CONSENT, "skipped: no consent given")
            raise RuleError(
                "no_consent_channel",
                f"nothing to subscribe: channels {', '.join(self.channels)} "
                "need an email or phone with consent",
            )
        attributes: dict[str, Any] = {}
        if email:
            attributes["email"] = email
        if phone:
            attributes["phone_number"] = phone
        attributes["subscriptions"] = subscriptions
        return [{"type": "profile", "attributes": attributes}]


def _parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RuleError("invalid_date", f"consented_at {text!r} is not a date-time", "consented_at") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _column_of(source: object) -> str | None:
    return getattr(source, "column", None) or getattr(source, "path", None)
