"""Checks on built items (per row) and on mappings (once), with rule codes the UI groups by."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sync.issues import Issue, warning
from sync.mapping import Mapping, TargetKind

TIME_MIN = datetime(1990, 1, 1, tzinfo=UTC)
MAX_STRING_BYTES = 100 * 1024
MAX_PROPERTIES = 400
METRIC_LIMIT = 200
METRIC_NEAR_SHARE = 0.9
PROFILE_IDENTIFIERS = ("email", "phone_number", "external_id", "id")
# Klaviyo's built-in profile properties, as the segment builder names them.
STANDARD_PROFILE_PROPERTIES = frozenset(
    {
        "email", "phone_number", "external_id", "first_name", "last_name", "organization", "title", "image",
        "locale", "address1", "address2", "city", "region", "country", "zip", "timezone", "latitude",
        "longitude", "ip",
    }
)  # fmt: skip
# Nested properties the order builder adds on purpose (it also sends top-level roll-ups).
_CONVENTIONAL_NESTED = frozenset({"Items"})


class EventChecks:
    """Per-row checks of event items against Klaviyo's event rules."""

    def __init__(self, now: datetime | None = None, declared_nested: Iterable[str] = ()) -> None:
        moment = now or datetime.now(UTC)
        self.latest = moment + timedelta(days=365)
        # Times from the date transform are "YYYY-MM-DDTHH:MM:SS+00:00", which compare as text.
        self.earliest_text = TIME_MIN.isoformat()
        self.latest_text = self.latest.replace(microsecond=0).isoformat()
        self.quiet_nested = _CONVENTIONAL_NESTED | frozenset(declared_nested)

    def check(self, item: dict[str, Any], errors: list[Issue], warnings: list[Issue]) -> None:
        """Append problems with one event item to ``errors`` / ``warnings``."""
        attrs = item["attributes"]
        profile = attrs["profile"]["data"]["attributes"]
        event = attrs["events"]["data"][0]["attributes"]
        if not (
            profile.get("email")
            or profile.get("phone_number")
            or profile.get("external_id")
            or profile.get("id")
        ):
            errors.append(
                Issue(
                    "missing_profile_identifier",
                    "the row has no email, phone number or external id, "
                    "so Klaviyo cannot tell whose event it is",
                )
            )
        value = event.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            errors.append(Issue("value_not_numeric", f"value {value!r} must be a number, not text", "value"))
        time = event.get("time")
        if time is not None and not (
            len(time) == 25 and time.endswith("+00:00") and self.earliest_text <= time <= self.latest_text
        ):
            self._check_time(time, errors)
        properties = event["properties"]
        if len(properties) > MAX_PROPERTIES:
            errors.append(
                Issue(
                    "too_many_properties",
                    f"the event has {len(properties)} properties; Klaviyo accepts at most {MAX_PROPERTIES}",
                )
            )
        for name, prop in properties.items():
            kind = type(prop)
            if kind is str:
                if len(prop) > MAX_STRING_BYTES // 4 and len(prop.encode()) > MAX_STRING_BYTES:
                    errors.append(_too_long(name, prop))
            elif kind is list:
                for element in prop:
                    if type(element) is not str or len(element) > 25_000:
                        self._check_nested(name, prop, errors, warnings)
                        break
                # else: a list of short strings (Categories, ItemNames) is segmentable and small
            elif kind is dict:
                self._check_nested(name, prop, errors, warnings)

    def _check_time(self, time: str, errors: list[Issue]) -> None:
        """Slow path: parse the time and compare it with Klaviyo's window."""
        try:
            moment = datetime.fromisoformat(time)
        except (TypeError, ValueError):
            errors.append(Issue("invalid_date", f"time {time!r} is not an ISO 8601 date-time", "time"))
            return
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        if moment < TIME_MIN or moment > self.latest:
            errors.append(
                Issue(
                    "time_out_of_range",
                    f"time {time} is outside Klaviyo's window (after 1990, at most a year ahead)",
                    "time",
                )
            )

    def _check_nested(self, name: str, prop: Any, errors: list[Issue], warnings: list[Issue]) -> None:
        for text in _strings(prop):
            if len(text) > MAX_STRING_BYTES // 4 and len(text.encode()) > MAX_STRING_BYTES:
                errors.append(_too_long(name, text))
                break
        nested = type(prop) is dict or any(type(element) is dict for element in prop)
        if nested and name not in self.quiet_nested:
            warnings.append(nested_warning(name))


def nested_warning(name: str) -> Issue:
    """Warning for an object-valued property: segments and flow filters only see top-level values."""
    return warning(
        "nested_property",
        f"property {name} holds nested objects; segments and flow filters can only use top-level, "
        "non-object properties, so also send the values you want to filter on at the top level",
        name,
    )


def _too_long(name: str, text: str) -> Issue:
    size = len(text.encode())
    return Issue("string_too_long", f"{name} is {size:,} bytes; Klaviyo accepts strings up to 100 KB", name)


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for inner in value.values():
            yield from _strings(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _strings(inner)


def check_item_strings(item: dict[str, Any], errors: list[Issue]) -> None:
    """String-size check for non-event items (profiles, catalog entries)."""
    for text in _strings(item.get("attributes", {})):
        if len(text) > MAX_STRING_BYTES // 4 and len(text.encode()) > MAX_STRING_BYTES:
            errors.append(
                Issue("string_too_long", f"a value is {len(text.encode()):,} bytes; the limit is 100 KB")
            )
            return


def check_profile_identifier(item: dict[str, Any], errors: list[Issue]) -> None:
    """A profile item needs email, phone number, external id or Klaviyo id."""
    attrs = item.get("attributes", {})
    if not item.get("id") and not any(attrs.get(key) for key in PROFILE_IDENTIFIERS):
        errors.append(
            Issue(
                "missing_profile_identifier",
                "the row has no email, phone number or external id for the profile",
            )
        )


# ---------------------------------------------------------------- mapping-level checks


def check_mapping(mapping: Mapping, profile_property_names: Iterable[str] = ()) -> list[Issue]:
    """Problems visible from the mapping alone (shown before any row runs)."""
    issues: list[Issue] = []
    targets = mapping.targets()
    kind = mapping.target.kind
    if kind in (TargetKind.EVENT, TargetKind.ORDER, TargetKind.PROFILE):
        issues.extend(_identity_issues(targets, kind))
    if kind in (TargetKind.EVENT, TargetKind.ORDER):
        issues.extend(_property_issues(targets, profile_property_names))
    return issues


def _identity_issues(targets: list[str], kind: TargetKind) -> list[Issue]:
    prefix = "" if kind is TargetKind.PROFILE else "profile."
    ids = {t.removeprefix(prefix) for t in targets if t in PROFILE_IDENTIFIERS or t.startswith(prefix)}
    ids &= set(PROFILE_IDENTIFIERS)
    if not ids:
        return [Issue("no_profile_identifier", "map at least one of email, phone_number or external_id")]
    if ids <= {"external_id", "id"}:
        return [
            warning(
                "external_id_only",
                "profiles are identified by external_id only: when the same person later arrives by email "
                "Klaviyo creates a second, permanent duplicate profile; map email as well if you have it",
                "external_id",
            )
        ]
    return []


def _property_issues(targets: list[str], profile_property_names: Iterable[str]) -> list[Issue]:
    issues: list[Issue] = []
    profile_names = {name.lower() for name in STANDARD_PROFILE_PROPERTIES}
    profile_names |= {name.lower() for name in profile_property_names}
    profile_names |= {t.split(".")[-1].lower() for t in targets if t.startswith("profile.properties.")}
    seen: set[str] = set()
    for target in targets:
        if not target.startswith("properties."):
            continue
        parts = target.split(".")
        name = parts[1]
        if name in seen:
            continue
        seen.add(name)
        if len(parts) > 2:
            issues.append(nested_warning(name))
        if name.lower() in profile_names:
            issues.append(
                warning(
                    "property_name_clash",
                    f"event property {name} has the same name as a profile property; Klaviyo then hides it "
                    "from the segment builder and flow filters, so rename it (for example Order{name})",
                    name,
                )
            )
    return issues


def check_new_metrics(
    metric_names: Iterable[str], existing: Iterable[str], limit: int = METRIC_LIMIT
) -> tuple[list[str], list[Issue]]:
    """(metric names the account does not have yet, issues about the account's metric limit)."""
    have = set(existing)
    new = [name for name in dict.fromkeys(metric_names) if name not in have]
    total = len(have) + len(new)
    if not new:
        return new, []
    if total > limit:
        issue = Issue(
            "metric_limit",
            f"this adds {len(new)} new metric(s) ({', '.join(new)}) to an account with {len(have)}; "
            f"accounts hold at most {limit} metrics, so events of new metrics would be refused",
        )
        return new, [issue]
    if total >= limit * METRIC_NEAR_SHARE:
        return new, [
            warning(
                "metric_limit_near",
                f"new metric(s) {', '.join(new)} bring the account to {total} of its {limit} metrics; "
                "prefer reusing an existing metric with a property that tells the variants apart",
            )
        ]
    return new, []


# ---------------------------------------------------------------- identities shared by rows

IDENTITY_LIMIT = 1_000_000  # identities remembered per run (hashes: ~100 bytes each)


class IdentityLedger:
    """Rows of one source that name the same Klaviyo profile: the same email (ignoring case and
    spaces), or the same phone number or external id on another person's row.

    Remembers 64-bit hashes only, up to IDENTITY_LIMIT identities; later ones are checked against those.
    """

    def __init__(self, limit: int = IDENTITY_LIMIT) -> None:
        self.limit = limit
        self.emails: dict[int, int] = {}  # hash of the normalised email -> first row
        self.others: dict[int, tuple[int, int | None]] = {}  # hash of (field, value) -> first row, its email

    def check(self, item: dict[str, Any], row: int, warnings: list[Issue]) -> None:
        """Warn when this profile item shares an identity with an earlier row."""
        attrs = item.get("attributes") or {}
        email = attrs.get("email")
        mine = None
        if isinstance(email, str) and email.strip():
            mine = hash(email.strip().lower())
            first = self.emails.get(mine)
            if first is not None and first != row:
                warnings.append(_same_email(email, first))
            elif first is None:
                self._remember(self.emails, mine, row)
        for name in ("phone_number", "external_id"):
            value = attrs.get(name)
            if value is None or str(value).strip() == "":
                continue
            key = hash((name, str(value).strip()))
            known = self.others.get(key)
            if known is None:
                self._remember(self.others, key, (row, mine))
            elif known[0] != row and (mine is None or known[1] != mine):
                warnings.append(_same_other(name, str(value), known[0], mine is not None))

    def _remember(self, table: dict[int, Any], key: int, value: Any) -> None:
        if len(self.emails) + len(self.others) < self.limit:
            table[key] = value


def _same_email(email: str, first: int) -> Issue:
    return warning(
        "duplicate_email",
        f"{email} is also on row {first} (Klaviyo matches emails whatever their case and spaces): "
        "both rows update one profile, and where they differ one row's values overwrite the other's",
        "email",
    )


def _same_other(name: str, value: str, first: int, has_email: bool) -> Issue:
    label = "phone number" if name == "phone_number" else "external id"
    # Klaviyo finds a profile by email, then phone number, then external id, and lets one profile
    # hold each of them.
    outcome = (
        f"one profile holds it in Klaviyo, so this row either changes row {first}'s profile (when its "
        "email is new to Klaviyo, overwriting that profile's email and values) or is refused as a "
        "duplicate profile (when its email is on another profile)"
        if has_email
        else f"with no email here, Klaviyo updates row {first}'s profile with this row's values"
    )
    return warning(
        f"duplicate_{name.removesuffix('_number')}",
        f"{label} {value} is also on row {first} for another email: {outcome}",
        name,
    )
