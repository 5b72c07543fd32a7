"""Simulator configuration: accounts, the rate-limit table, faults and time scaling."""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

SANDBOX_KEY = "pk_sandbox_0000000000000000000000000000"
LATEST_REVISION = "2026-10-15"
MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_STRING_BYTES = 100 * 1024
POINTER_FORMS = ("absolute", "relative", "none")


@dataclass
class Account:
    """One Klaviyo account the simulator serves; private keys map to it."""

    id: str
    name: str = "Sandbox Store"
    timezone: str = "UTC"
    currency: str = "USD"
    public_key: str = "SBX000"
    metric_limit: int = 200


@dataclass
class Limit:
    """Burst (per 1 s) and steady (per 60 s) request counts for one endpoint class."""

    burst: int
    steady: int


def default_limits() -> dict[str, Limit]:
    """The per-endpoint-class numbers from klaviyo-api.md."""
    table = {
        "accounts": (1, 15),
        "events": (350, 3500),
        "events_bulk": (10, 150),
        "profile_import": (75, 750),
        "profiles": (75, 750),
        "profile_bulk_import": (10, 150),
        "profile_bulk_import_read": (10, 150),
        "lists_read": (75, 750),
        "lists_write": (10, 150),
        "list_profile_count": (1, 15),
        "list_members": (10, 150),
        "subscriptions": (75, 750),
        "suppressions": (75, 750),
        "metrics": (10, 150),
        "catalog_write": (75, 750),
        "catalog_job_read": (75, 750),
        "catalog_job_read_xl": (350, 3500),
        "catalog_items_read": (350, 3500),
        "events_read": (350, 3500),
        # create_webhook.json, delete_webhook.json, get_webhook_topics.json (klaviyo/openapi): 1/s, 15/m.
        "webhooks": (1, 15),
        "metric_aggregates": (3, 60),
    }
    return {name: Limit(burst, steady) for name, (burst, steady) in table.items()}


@dataclass
class Faults:
    """Runtime-switchable faults. Shares are probabilities in [0, 1]; latency is in real seconds."""

    error_share: float = 0.0
    error_statuses: list[int] = field(default_factory=lambda: [500, 502, 503, 504])
    latency_min: float = 0.0
    latency_max: float = 0.0
    drop_share: float = 0.0
    drop_after_commit_share: float = 0.0
    malformed_share: float = 0.0
    # Share of profile import and catalog jobs that settle "complete" with every count 0 (a job
    # Klaviyo reports inconsistently; its effects still apply): the client must not trust it.
    job_zero_counts_share: float = 0.0
    # Share of those jobs whose refusals are counted in failed_count but left out of their error list.
    job_errors_hidden_share: float = 0.0
    # Share of accepted events lost inside Klaviyo (never stored), only on these days (YYYY-MM-DD in
    # the account's time zone) when any are given: what a reconciliation must catch.
    drop_events_share: float = 0.0
    drop_events_days: list[str] = field(default_factory=list)
    # Endpoints ("GET /api/lists/{id}", as routed) that always answer 503, to test one call failing.
    failing_routes: list[str] = field(default_factory=list)
    # monotonic deadline of a "429 storm"; set through SimConfig.start_storm
    storm_until: float = 0.0


@dataclass
class SimConfig:
    """Everything that shapes the simulator's behaviour; mutable at runtime (tests, /__sim/config)."""

    accounts: dict[str, Account] = field(
        default_factory=lambda: {SANDBOX_KEY: Account(id="SBX000", public_key="SBX000")}
    )
    revoked_keys: set[str] = field(default_factory=set)
    time_scale: float = 1.0
    limits_enabled: bool = True
    limits: dict[str, Limit] = field(default_factory=default_limits)
    faults: Faults = field(default_factory=Faults)
    list_create_daily_limit: int = 150
    catalog_jobs_in_flight: int = 500
    # simulated seconds a bulk job stays queued, then processing (divided by time_scale)
    job_queued_seconds: float = 0.5
    job_processing_seconds: float = 1.0
    # simulated seconds before an accepted event counts in Query Metric Aggregates
    events_visible_seconds: float = 20.0
    # simulated seconds before a new profile shows in filtered searches (GET /api/profiles?filter=)
    search_lag_seconds: float = 0.0
    # The form of source.pointer on import errors and catalog job errors, which Klaviyo's spec leaves
    # open: "absolute" (into the request, /data/attributes/profiles/data/3/attributes/email),
    # "relative" (into the item, /data/attributes/email) or "none" (no source.pointer).
    job_error_pointers: str = "absolute"
    # Whether a 409 duplicate_profile carries meta.duplicate_profile_id (undocumented by Klaviyo).
    duplicate_profile_meta: bool = True
    # Check every answer against Klaviyo's spec (simulator.conformance; tests turn it on).
    check_answers: bool = False
    max_body_bytes: int = MAX_BODY_BYTES
    # Freeze the garbage collector's view of stored data after each write, so full collections
    # over a heap of 200k+ stored events do not stall requests for hundreds of milliseconds.
    gc_freeze: bool = True
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.seed is not None:
            self.rng.seed(self.seed)

    def scaled(self, seconds: float) -> float:
        """Real seconds for a span of simulated seconds."""
        return seconds / self.time_scale if self.time_scale > 0 else seconds

    def account_for(self, key: str) -> Account | None:
        """The account a private key opens, or None when unknown or revoked."""
        if key in self.revoked_keys:
            return None
        return self.accounts.get(key)

    def add_key(self, key: str, account: Account | None = None) -> Account:
        """Register a private key (for a new account, or the sandbox account by default)."""
        if account is None:
            account = next(iter(self.accounts.values()), None) or Account(id="SBX000")
        self.accounts[key] = account
        self.revoked_keys.discard(key)
        return account

    def revoke_key(self, key: str) -> None:
        """Make a key answer 401 from now on."""
        self.revoked_keys.add(key)

    def start_storm(self, seconds: float) -> None:
        """Answer every /api request with 429 for ``seconds`` simulated seconds."""
        self.faults.storm_until = time.monotonic() + self.scaled(seconds)

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial config from JSON (the /__sim/config body); unknown keys raise ValueError."""
        for name, value in changes.items():
            if name == "faults":
                for fname, fvalue in value.items():
                    if fname == "storm_seconds":
                        self.start_storm(float(fvalue))
                    elif fname in _FAULT_FIELDS:
                        setattr(self.faults, fname, fvalue)
                    else:
                        raise ValueError(f"unknown fault {fname!r}")
            elif name == "storm_seconds":
                self.start_storm(float(value))
            elif name == "limits":
                for cls, numbers in value.items():
                    self.limits[cls] = Limit(int(numbers["burst"]), int(numbers["steady"]))
            elif name == "accounts":
                for key, account in value.items():
                    self.accounts[key] = Account(**account)
            elif name == "seed":
                self.seed = value
                self.rng.seed(value)
            elif name == "time_scale":
                if float(value) <= 0:
                    raise ValueError("time_scale must be > 0")
                self.time_scale = float(value)
            elif name == "job_error_pointers":
                if value not in POINTER_FORMS:
                    raise ValueError(f"job_error_pointers must be one of {POINTER_FORMS}")
                self.job_error_pointers = value
            elif name == "metric_limit":
                for account in self.accounts.values():
                    account.metric_limit = int(value)
            elif name in _SIMPLE_FIELDS:
                setattr(self, name, value)
            else:
                raise ValueError(f"unknown config field {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (keys masked to their last four characters)."""
        return {
            "accounts": {_mask(k): asdict(a) for k, a in self.accounts.items()},
            "revoked_keys": sorted(_mask(k) for k in self.revoked_keys),
            "time_scale": self.time_scale,
            "limits_enabled": self.limits_enabled,
            "limits": {k: asdict(v) for k, v in self.limits.items()},
            "faults": {
                **asdict(self.faults),
                "storm_remaining": max(0.0, self.faults.storm_until - time.monotonic()),
            },
            "list_create_daily_limit": self.list_create_daily_limit,
            "catalog_jobs_in_flight": self.catalog_jobs_in_flight,
            "job_queued_seconds": self.job_queued_seconds,
            "job_processing_seconds": self.job_processing_seconds,
            "search_lag_seconds": self.search_lag_seconds,
            "events_visible_seconds": self.events_visible_seconds,
            "job_error_pointers": self.job_error_pointers,
            "duplicate_profile_meta": self.duplicate_profile_meta,
            "check_answers": self.check_answers,
            "max_body_bytes": self.max_body_bytes,
        }


_FAULT_FIELDS = {f.name for f in fields(Faults)}
_SIMPLE_FIELDS = {
    "time_scale",
    "limits_enabled",
    "list_create_daily_limit",
    "catalog_jobs_in_flight",
    "job_queued_seconds",
    "job_processing_seconds",
    "search_lag_seconds",
    "events_visible_seconds",
    "duplicate_profile_meta",
    "check_answers",
    "max_body_bytes",
    "gc_freeze",
}


def _mask(key: str) -> str:
    return "..." + key[-4:]
