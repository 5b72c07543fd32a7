"""In-memory Klaviyo data per account, plus counters; thread-safe reads for tests in other threads."""

from __future__ import annotations

import base64
import itertools
import os
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from simulator.config import SimConfig

IDENTIFIERS = ("email", "phone_number", "external_id")


_ID_PREFIX = "01" + base64.b32encode(os.urandom(5)).decode()[:8]
_ID_COUNTER = itertools.count(1)


def new_id() -> str:
    """A 26-character ULID-like id, as Klaviyo uses for profiles and jobs (unique per process)."""
    # A counter behind a random prefix: ids must be unique and cheap (one per stored event).
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016d}"


def new_list_id() -> str:
    """A short list id in Klaviyo's style (6 alphanumerics)."""
    return base64.b32encode(os.urandom(5)).decode()[:6].replace("=", "X")


def new_uuid() -> str:
    """A uuid4 string for error ids."""
    return str(uuid.uuid4())


def now_iso() -> str:
    """The current UTC time as ISO 8601 with a +00:00 offset."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def is_example(email: str | None) -> bool:
    """@example.com addresses are accepted by Klaviyo but never processed."""
    return bool(email) and email.lower().endswith("@example.com")  # type: ignore[union-attr]


class Conflict(Exception):
    """An update would give a profile an identifier another profile already has."""

    def __init__(self, other_id: str, field_name: str) -> None:
        super().__init__(f"{field_name} belongs to profile {other_id}")
        self.other_id = other_id
        self.field_name = field_name


@dataclass
class Profile:
    """A stored profile: JSON:API attributes plus consent, suppression and timestamps."""

    id: str
    attributes: dict[str, Any]
    created: str
    updated: str
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    suppressed: bool = False
    created_mono: float = field(default_factory=time.monotonic)  # for the search lag

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for /__sim/profiles and tests)."""
        return {
            "id": self.id,
            **self.attributes,
            "subscriptions": self.subscriptions,
            "suppressed": self.suppressed,
            "created": self.created,
            "updated": self.updated,
        }


@dataclass
class KList:
    """A list: name, opt-in process and its members (insertion-ordered profile ids)."""

    id: str
    name: str
    opt_in_process: str
    created: str
    updated: str
    # profile id -> joined_group_at (when it joined; insertion-ordered)
    members: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for /__sim/lists and tests)."""
        return {
            "id": self.id,
            "name": self.name,
            "opt_in_process": self.opt_in_process,
            "created": self.created,
            "updated": self.updated,
            "profile_count": len(self.members),
            "members": list(self.members),
        }


@dataclass
class Job:
    """An asynchronous bulk job: queued -> processing -> complete over simulated time."""

    id: str
    type: str
    created: str
    created_mono: float
    total: int
    errors: list[dict[str, Any]]
    queued_for: float
    processing_for: float
    # applied once, when the job first reaches "complete"
    apply: Any = None
    list_ids: list[str] = field(default_factory=list)
    done: bool = False
    completed_at: str | None = None
    # Fault: the job settles "complete" with every count 0 (faults.job_zero_counts_share).
    zero_counts: bool = False
    # Fault: refusals are counted but not listed (faults.job_errors_hidden_share).
    errors_hidden: bool = False

    def status(self, now: float) -> str:
        """queued, processing or complete, by elapsed real time."""
        elapsed = now - self.created_mono
        if elapsed < self.queued_for:
            return "queued"
        if elapsed < self.queued_for + self.processing_for:
            return "processing"
        return "complete"


class AccountState:
    """Everything stored for one account."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.profiles: dict[str, Profile] = {}
        self.index: dict[str, dict[str, str]] = {name: {} for name in IDENTIFIERS}
        self.events: list[dict[str, Any]] = []
        self.event_keys: set[tuple[Any, ...]] = set()
        self.metrics: dict[str, dict[str, Any]] = {}
        self.lists: dict[str, KList] = {}
        self.list_creates: list[float] = [0, 0]  # [day window index, count]
        self.profile_jobs: dict[str, Job] = {}
        self.catalog_jobs: dict[str, Job] = {}
        # jobs not yet complete, so tick() does not scan every job ever created
        self.pending_jobs: list[Job] = []
        self.catalog_items: dict[str, dict[str, Any]] = {}
        self.catalog_variants: dict[str, dict[str, Any]] = {}
        self.catalog_categories: dict[str, dict[str, Any]] = {}
        self.global_unsubscribes: list[dict[str, Any]] = []
        self.list_unsubscribes: list[dict[str, Any]] = []
        self.pending_opt_ins: list[dict[str, Any]] = []
        self.suppressions: dict[str, dict[str, Any]] = {}

    # --- profiles -------------------------------------------------------------------------

    @staticmethod
    def _key(name: str, value: str) -> str:
        return value.lower() if name == "email" else value

    def find_profile(self, profile_id: str | None = None, **identifiers: Any) -> Profile | None:
        """The profile with this id, or the first identifier (email, phone, external_id) that matches."""
        if profile_id:
            return self.profiles.get(profile_id)
        for name in IDENTIFIERS:
            value = identifiers.get(name)
            if value:
                pid = self.index[name].get(self._key(name, value))
                if pid:
                    return self.profiles[pid]
        return None

    def conflict_for(self, target_id: str | None, attrs: dict[str, Any]) -> Conflict | None:
        """A Conflict when an identifier in ``attrs`` belongs to a profile other than ``target_id``."""
        for name in IDENTIFIERS:
            value = attrs.get(name)
            if value:
                owner = self.index[name].get(self._key(name, value))
                if owner and owner != target_id:
                    return Conflict(owner, name)
        return None

    def create_profile(self, attrs: dict[str, Any]) -> Profile:
        """Store a new profile with the non-null attributes given."""
        stamp = now_iso()
        profile = Profile(new_id(), {}, stamp, stamp)
        self.profiles[profile.id] = profile
        self._apply(profile, attrs)
        return profile

    def update_profile(self, profile: Profile, attrs: dict[str, Any]) -> None:
        """Upsert semantics: null clears a field, a missing field is unchanged."""
        self._apply(profile, attrs)
        profile.updated = now_iso()

    def _apply(self, profile: Profile, attrs: dict[str, Any]) -> None:
        stored = profile.attributes
        for name, value in attrs.items():
            if name in IDENTIFIERS:
                old = stored.get(name)
                if old:
                    self.index[name].pop(self._key(name, old), None)
                if value:
                    self.index[name][self._key(name, value)] = profile.id
            if value is None:
                stored.pop(name, None)
            elif name in ("properties", "location") and isinstance(value, dict):
                merged = dict(stored.get(name) or {})
                for key, item in value.items():
                    if item is None:
                        merged.pop(key, None)
                    else:
                        merged[key] = item
                stored[name] = merged
            else:
                stored[name] = value

    def resolve_for_event(self, profile_id: str | None, attrs: dict[str, Any]) -> Profile:
        """The profile an event belongs to, created when new (as Klaviyo does)."""
        profile = self.find_profile(profile_id, **attrs)
        if profile is None:
            return self.create_profile({k: v for k, v in attrs.items() if v is not None})
        # Fill identifiers the profile lacks, unless another profile already owns them.
        fill = {}
        for name in IDENTIFIERS:
            value = attrs.get(name)
            if (
                value
                and not profile.attributes.get(name)
                and not self.index[name].get(self._key(name, value))
            ):
                fill[name] = value
        if fill:
            self._apply(profile, fill)
        return profile

    # --- lists ----------------------------------------------------------------------------

    def add_members(self, klist: KList, profile_ids: list[str]) -> None:
        """Add profiles to a list (no consent change)."""
        stamp = now_iso()
        for pid in profile_ids:
            klist.members.setdefault(pid, stamp)
        klist.updated = stamp

    # --- queries --------------------------------------------------------------------------

    def in_flight_catalog_jobs(self, now: float) -> list[Job]:
        """Catalog jobs not yet complete."""
        return [job for job in self.catalog_jobs.values() if job.status(now) != "complete"]


class SimulatorState:
    """All accounts' data and the request counters. Use ``with state.lock`` for consistent reads."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.accounts: dict[str, AccountState] = {}
        self.stats = Stats()

    def reset(self) -> None:
        """Forget all data and counters (config is kept)."""
        with self.lock:
            self.accounts.clear()
            self.stats = Stats()

    def account(self, account_id: str) -> AccountState:
        """The state of one account, created on first use."""
        acct = self.accounts.get(account_id)
        if acct is None:
            acct = self.accounts[account_id] = AccountState(account_id)
        return acct

    def _selected(self, account_id: str | None) -> list[AccountState]:
        if account_id is not None:
            return [self.account(account_id)]
        return list(self.accounts.values())

    def tick(self) -> None:
        """Complete every job whose simulated time is up, applying its effects once."""
        now = time.monotonic()
        with self.lock:
            for acct in self.accounts.values():
                if not acct.pending_jobs:
                    continue
                for job in acct.pending_jobs:
                    if not job.done and job.status(now) == "complete":
                        finish_job(job)
                acct.pending_jobs = [job for job in acct.pending_jobs if not job.done]

    # --- read API for tests and /__sim ----------------------------------------------------

    def events(self, metric: str | None = None, account_id: str | None = None) -> list[dict[str, Any]]:
        """Stored events (after dedup and @example.com dropping), oldest first."""
        with self.lock:
            out: list[dict[str, Any]] = []
            for acct in self._selected(account_id):
                out.extend(e for e in acct.events if metric is None or e["metric"] == metric)
            return out

    def profiles(self, account_id: str | None = None) -> list[dict[str, Any]]:
        """Stored profiles as plain dicts."""
        self.tick()
        with self.lock:
            return [p.to_dict() for acct in self._selected(account_id) for p in acct.profiles.values()]

    def profile(self, account_id: str | None = None, **identifiers: Any) -> dict[str, Any] | None:
        """One profile by id=, email=, phone_number= or external_id=, or None."""
        self.tick()
        with self.lock:
            for acct in self._selected(account_id):
                found = acct.find_profile(identifiers.get("id"), **identifiers)
                if found:
                    return found.to_dict()
            return None

    def lists(self, account_id: str | None = None) -> list[dict[str, Any]]:
        """Lists with their members."""
        self.tick()
        with self.lock:
            return [kl.to_dict() for acct in self._selected(account_id) for kl in acct.lists.values()]

    def metrics(self, account_id: str | None = None) -> list[dict[str, Any]]:
        """Metrics created by events."""
        with self.lock:
            return [dict(m) for acct in self._selected(account_id) for m in acct.metrics.values()]

    def catalog(self, account_id: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Catalog items, variants and categories."""
        self.tick()
        with self.lock:
            accts = self._selected(account_id)
            return {
                "items": [dict(i) for a in accts for i in a.catalog_items.values()],
                "variants": [dict(v) for a in accts for v in a.catalog_variants.values()],
                "categories": [dict(c) for a in accts for c in a.catalog_categories.values()],
            }

    def consent(self, account_id: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Global and list unsubscribes, pending double opt-ins and suppressions."""
        self.tick()
        with self.lock:
            accts = self._selected(account_id)
            return {
                "global_unsubscribes": [dict(x) for a in accts for x in a.global_unsubscribes],
                "list_unsubscribes": [dict(x) for a in accts for x in a.list_unsubscribes],
                "pending_opt_ins": [dict(x) for a in accts for x in a.pending_opt_ins],
                "suppressions": [dict(x) for a in accts for x in a.suppressions.values()],
            }

    def confirm_opt_ins(self, account_id: str | None = None) -> int:
        """Act as if every pending double opt-in was confirmed: subscribe and add to the list."""
        with self.lock:
            confirmed = 0
            for acct in self._selected(account_id):
                for pending in acct.pending_opt_ins:
                    profile = acct.profiles.get(pending["profile_id"])
                    if profile is None:
                        continue
                    profile.subscriptions.setdefault(pending["channel"], {})["marketing"] = {
                        "consent": "SUBSCRIBED",
                        "consented_at": now_iso(),
                        "method": "DOUBLE_OPT_IN",
                        "list_id": pending["list_id"],
                    }
                    klist = acct.lists.get(pending["list_id"] or "")
                    if klist is not None:
                        klist.members.setdefault(profile.id, now_iso())
                    confirmed += 1
                acct.pending_opt_ins.clear()
            return confirmed

    def snapshot_stats(self) -> dict[str, Any]:
        """Counters as a JSON-ready dict."""
        with self.lock:
            return self.stats.to_dict()


def finish_job(job: Job) -> None:
    """Mark a job complete and apply its stored effects."""
    job.done = True
    job.completed_at = now_iso()
    if job.apply is not None:
        job.apply()
        job.apply = None


class Stats:
    """Request and outcome counters."""

    def __init__(self) -> None:
        self.requests: dict[str, Counter[int]] = defaultdict(Counter)
        self.rate_limited = 0
        self.duplicates = 0
        self.dropped_example_com = 0
        self.accepted: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.peak_catalog_jobs_in_flight = 0  # most catalog bulk jobs unfinished at once, per account

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counters."""
        return {
            "requests": {ep: {str(s): n for s, n in c.items()} for ep, c in self.requests.items()},
            "total_requests": sum(sum(c.values()) for c in self.requests.values()),
            "rate_limited": self.rate_limited,
            "duplicates": self.duplicates,
            "dropped_example_com": self.dropped_example_com,
            "accepted": dict(self.accepted),
            "faults": dict(self.faults),
            "peak_catalog_jobs_in_flight": self.peak_catalog_jobs_in_flight,
        }
