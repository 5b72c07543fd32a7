"""Poll Klaviyo's asynchronous bulk jobs until they finish and map their per-item errors to rows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from klaviyo.batching import RowRejection
from klaviyo.client import KlaviyoClient
from klaviyo.endpoints import BULK_PROFILES, Endpoint
from klaviyo.errors import KlaviyoError, item_index
from klaviyo.sender import BatchOutcome

FINISHED = {"complete", "completed", "cancelled", "failed"}


class JobTimeout(KlaviyoError):
    """The job did not finish in the time allowed; poll again later."""


@dataclass
class JobResult:
    """A finished job: its status, counts, and the rows Klaviyo refused."""

    job_id: str
    status: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    rejected: list[RowRejection] = field(default_factory=list)


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


def _row_for(pointer: str | None, row_refs: Sequence[int]) -> int | None:
    index = item_index(pointer)
    if index is None or not 0 <= index < len(row_refs):
        return None
    return row_refs[index]


def _rejections(errors: list[Any], row_refs: Sequence[int]) -> list[RowRejection]:
    rejected = []
    for error in errors:
        attrs = error.get("attributes", error) if isinstance(error, dict) else {}
        source = attrs.get("source") or {}
        pointer = source.get("pointer") if isinstance(source, dict) else None
        row = _row_for(pointer, row_refs)
        if row is None:
            continue
        detail = str(attrs.get("detail") or attrs.get("title") or "rejected by Klaviyo")
        rejected.append(RowRejection(row, str(attrs.get("code") or "invalid"), detail, pointer))
    return rejected


def _result(job: dict[str, Any], rejected: list[RowRejection]) -> JobResult:
    attrs = job.get("attributes") or {}
    return JobResult(
        job_id=str(job.get("id")),
        status=str(attrs.get("status", "")),
        total=int(attrs.get("total_count") or 0),
        completed=int(attrs.get("completed_count") or 0),
        failed=int(attrs.get("failed_count") or 0),
        rejected=rejected,
    )


async def wait_profile_import(
    client: KlaviyoClient, job_id: str, row_refs: Sequence[int], **poll: float
) -> JobResult:
    """Wait for a profile bulk import job, then fetch its import errors mapped to rows by index."""
    job = await wait_for_job(lambda: client.get_profile_import_job(job_id), **poll)
    attrs = job.get("attributes") or {}
    if attrs.get("failed_count") == 0:
        # Reads share a small budget (150/min) with the polls: a clean job needs no error page.
        return _result(job, [])
    errors = [error async for error in client.iter_profile_import_errors(job_id)]
    return _result(job, _rejections(errors, row_refs))


async def wait_catalog_job(
    client: KlaviyoClient, job_type: str, job_id: str, row_refs: Sequence[int], **poll: float
) -> JobResult:
    """Wait for a catalog bulk job; its ``errors`` attribute names failed items by pointer."""
    job = await wait_for_job(lambda: client.get_catalog_job(job_type, job_id), **poll)
    errors = (job.get("attributes") or {}).get("errors") or []
    return _result(job, _rejections(errors, row_refs))


async def settle(
    client: KlaviyoClient, endpoint: Endpoint, outcome: BatchOutcome, **poll: float
) -> BatchOutcome:
    """For asynchronous bulk jobs (profile import, catalog), wait for each job and move the rows it
    refused from ``accepted`` to ``rejected``. Other endpoints are final at send time."""
    if endpoint.job_type is None or not (
        endpoint is BULK_PROFILES or endpoint.job_type.startswith("catalog-")
    ):
        return outcome
    refused: list[RowRejection] = []
    for job_id, rows in outcome.job_rows.items():
        if endpoint is BULK_PROFILES:
            result = await wait_profile_import(client, job_id, rows, **poll)
        else:
            result = await wait_catalog_job(client, endpoint.job_type, job_id, rows, **poll)
        refused.extend(result.rejected)
    if refused:
        # One row can carry several errors; keep them all but drop the row from accepted once.
        gone = {r.row_ref for r in refused}
        outcome.accepted = [ref for ref in outcome.accepted if ref not in gone]
        outcome.rejected.extend(refused)
    return outcome
