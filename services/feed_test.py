"""'Test feed' on the schedule form: fetch the first page and check the chosen mapping against it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import httpx
from sqlmodel.ext.asyncio.session import AsyncSession

from config.crypto import decrypt_secret
from config.settings import Settings
from models import FeedSource, Schedule
from services import schedules
from sync.feed_check import FeedFit, check_records, record_fields
from sync.feeds import FeedError, check_url, describe, fetch_first_page
from sync.mapping import TargetKind

SAMPLES = 3
# The first page only, and quickly: the form waits for it.
TEST_TIMEOUT_S = 10.0


@dataclass(slots=True)
class FeedTest:
    """What the first page held and how the mapping fits it."""

    url: str = ""
    error: str | None = None
    records_path: str = ""
    detected: bool = False
    candidates: list[str] = field(default_factory=list)
    count: int = 0
    fields: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    fit: FeedFit | None = None
    mapping_name: str | None = None
    events: bool = False  # the mapping sends events: "use the time each record is received" applies
    received_time: bool = False

    @property
    def time_missing(self) -> bool:
        """The refusal is (also) for records without a time: the received-time choice would help."""
        return self.fit is not None and any("time of each event" in e for e in self.fit.errors)

    @property
    def refusal(self) -> str | None:
        """Why the schedule may not be saved with this mapping (None: it may)."""
        return self.fit.message() if self.fit is not None and not self.fit.ok else None


def _headers(form: schedules.ScheduleForm, settings: Settings, stored: FeedSource | None) -> dict[str, str]:
    if form.auth_header_name and form.auth_header_value:
        return {form.auth_header_name: form.auth_header_value}
    if stored is not None and stored.auth_header_encrypted and not form.auth_header_remove:
        name = form.auth_header_name or stored.auth_header_name
        if name:
            return {name: decrypt_secret(settings.secret, stored.auth_header_encrypted)}
    return {}


async def try_feed(
    db: AsyncSession, settings: Settings, form: schedules.ScheduleForm, schedule: Schedule | None = None
) -> FeedTest:
    """Fetch the first page the form describes and check the chosen mapping against its records."""
    result = FeedTest(url=form.url, received_time=form.use_received_time)
    problem = check_url(form.url)
    if problem:
        result.error = problem
        return result
    stored = await db.get(FeedSource, schedule.source_id) if schedule is not None else None
    source = FeedSource(name=form.name or "test", url=form.url)
    schedules.apply_source(source, form)
    spec = schedules.feed_spec(source, settings)
    spec = replace(spec, headers=_headers(form, settings, stored), timeout_s=TEST_TIMEOUT_S)
    try:
        async with httpx.AsyncClient(follow_redirects=False) as http:
            page = await fetch_first_page(http, spec)
    except FeedError as exc:
        result.error = str(exc)
        return result
    result.url = describe(form.url)
    result.records_path, result.detected = page.records_path, page.detected
    result.candidates = page.candidates
    result.count = len(page.records)
    result.samples = page.records[:SAMPLES]
    mapping_spec = await schedules.mapping_spec(db, form.mapping_id) if form.mapping_id else None
    if mapping_spec is not None:
        result.mapping_name = mapping_spec.name
        result.events = mapping_spec.target.kind in (TargetKind.EVENT, TargetKind.ORDER)
        result.fit = check_records(mapping_spec, page.records, received_time=form.use_received_time)
        result.fields = result.fit.fields
    else:
        result.fields = record_fields(page.records[:200])
    return result
