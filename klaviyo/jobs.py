"""Poll Klaviyo's asynchronous bulk jobs until they finish and map their per-item errors to rows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from klaviyo.attribution import Attribution, Keys, attribute
from klaviyo.batching import RowRejection
from klaviyo.client import KlaviyoClient
from klaviyo.endpoints import BULK_PROFILES, Endpoint
from klaviyo.errors import KlaviyoError
from klaviyo.sender import BatchOutcome

FINISHED = {"complete", "completed", "cancelled", "failed"}


class JobTimeout(KlaviyoError):
    """The job did not finish in the time allowed; poll again later."""


@dataclass
class JobResult:
    """A finished job: its status, counts, the rows Klaviyo refused, and refusals matching no row."""

    job_id: str
    status: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    rejected: list[RowRejection] = field(default_factory=list)
    unmatched: list[tuple[str, str]] = field(default_factory=list)

    def adds_up(self, sent: int) -> bool:
        """Whether the job's report accounts for every item sent: complete, total_count equal to
        what was sent, and completed_count + failed_count equal to total_count."""
        return (
            self.status.lower() in ("complete", "completed")
            and self.total == sent
            and self.completed + self.failed == self.total
        )

    def summary(self, sent: int) -> str:
        return (
            f"Klaviyo's job {self.job_id} settled {self.status or 'without a status'} reporting "
            f"{self.total:,} total, {self.completed:,} completed and {self.failed:,} failed "
            f"for {sent:,} sent"
        )


async def wait_for_job(
    fetch: Callable[[], Awaitable[dict[str, Any]]],
    *,
    first_delay: float = 0.5,
    max_delay: float = 15.0,
    timeout: float = 3600.0,
) -> dict[str, Any]:
    """Call ``fetch`` (returns the job resource) with doubling delays until its status is final."""
    deadline = time.monotonic() + timeout
    delay = first_delay
    while True:
        job = await fetch()
        status = str((job.get("attributes") or {}).get("status", "")).lower()
        if status in FINISHED:
            return job
        if time.monotonic() + delay > deadline:
            raise JobTimeout(f"job {job.get('id')} still {status or 'unknown'} after {timeout:.0f}s")
        await asyncio.sleep(delay)
        delay = min(max_delay, delay * 2)


def _result(job: dict[str, Any], attribution: Attribution | None = None) -> JobResult:
    attrs = job.get("attributes") or {}
    found = attribution or Attribution()
    return JobResult(
        job_id=str(job.get("id")),
        status=str(attrs.get("status", "")),
        total=int(attrs.get("total_count") or 0),
        completed=int(attrs.get("completed_count") or 0),
        failed=int(attrs.get("failed_count") or 0),
        rejected=found.rejected,
        unmatched=found.unmatched,
    )


async def wait_profile_import(
    client: KlaviyoClient,
    job_id: str,
    row_refs: Sequence[int],
    keys: Sequence[Keys] | None = None,
    **poll: float,
) -> JobResult:
    """Wait for a profile bulk import job, then fetch its import errors matched to rows
    (klaviyo.attribution: by original_payload, else by pointer)."""
    job = await wait_for_job(lambda: client.get_profile_import_job(job_id), **poll)
    attrs = job.get("attributes") or {}
    if attrs.get("failed_count") == 0:
        # Reads share a small budget (150/min) with the polls: a clean job needs no error page.
        return _result(job)
    errors = [error async for error in client.iter_profile_import_errors(job_id)]
    return _result(job, attribute(errors, row_refs, keys))


async def wait_catalog_job(
    client: KlaviyoClient,
    job_type: str,
    job_id: str,
    row_refs: Sequence[int],
    keys: Sequence[Keys] | None = None,
    **poll: float,
) -> JobResult:
    """Wait for a catalog bulk job; its ``errors`` attribute names failed items."""
    job = await wait_for_job(lambda: client.get_catalog_job(job_type, job_id), **poll)
    errors = (job.get("attributes") or {}).get("errors") or []
    return _result(job, attribute(errors, row_refs, keys))


UNCONFIRMED = "job_unconfirmed"
ROW_UNKNOWN = "refused_row_unknown"


def job_rejections(outcome: BatchOutcome, result: JobResult, rows: Sequence[int]) -> list[RowRejection]:
    """The rejections one settled job adds to ``outcome``, and its refusals that name no row.

    A job whose counts do not add up to what was sent is not trusted: every row it did not refuse
    by name is refused as ``job_unconfirmed`` (safe to resend: upserts and catalog writes repeat).
    Otherwise refusals matching no row (and failures the job counts but does not explain) are one
    row-0 rejection ``refused_row_unknown`` and are taken off ``applied``, so the applied count is
    never more than the job's completed_count.
    """
    sent = len(rows)
    if not result.adds_up(sent):
        named = {r.row_ref for r in result.rejected}
        detail = f"{result.summary(sent)}: whether this row was applied is unknown. Retry it."
        return result.rejected + [RowRejection(row, UNCONFIRMED, detail) for row in rows if row not in named]
    matched = len({r.row_ref for r in result.rejected})
    unknown = max(result.failed - matched, len(result.unmatched))
    if not unknown:
        return result.rejected
    outcome.unattributed += unknown
    said = "; ".join(sorted({f"{code}: {detail}" for code, detail in result.unmatched})[:3])
    detail = (
        f"Klaviyo refused {unknown:,} item(s) of job {result.job_id} without naming their rows "
        f"({result.failed:,} failed, {matched:,} matched to rows)"
    )
    if said:
        detail += f". Klaviyo said: {said}"
    return [*result.rejected, RowRejection(0, ROW_UNKNOWN, detail, count=unknown)]


async def settle(
    client: KlaviyoClient, endpoint: Endpoint, outcome: BatchOutcome, **poll: float
) -> BatchOutcome:
    """For asynchronous bulk jobs (profile import, catalog), wait for each job and move the rows it
    refused from ``accepted`` to ``rejected``. Other endpoints are final at send time."""
    if not endpoint.settles or endpoint.job_type is None:
        return outcome
    refused: list[RowRejection] = []
    for job_id, rows in outcome.job_rows.items():
        keys = outcome.job_keys.get(job_id)
        if endpoint is BULK_PROFILES:
            result = await wait_profile_import(client, job_id, rows, keys, **poll)
        else:
            result = await wait_catalog_job(client, endpoint.job_type, job_id, rows, keys, **poll)
        refused.extend(job_rejections(outcome, result, rows))
    if refused:
        # One row can carry several errors; keep them all but drop the row from accepted once.
        gone = {r.row_ref for r in refused}
        outcome.accepted = [ref for ref in outcome.accepted if ref not in gone]
        outcome.rejected.extend(refused)
    return outcome
