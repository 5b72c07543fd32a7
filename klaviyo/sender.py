"""Send batches with partial-failure handling, and a whole stream of items for a run.

A 400 that points at items rejects exactly those rows and resends the rest at once; a 400 that
points at nothing is bisected until the bad items are isolated. 401/403 abort the run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from klaviyo.attribution import Keys, item_keys
from klaviyo.batching import Batch, RowRejection, iter_batches
from klaviyo.client import KlaviyoClient
from klaviyo.endpoints import Endpoint
from klaviyo.errors import ErrorDetail, ValidationFailed
from klaviyo.retry import AttemptStats


@dataclass
class BatchOutcome:
    """What became of one batch: rows accepted and rejected, and what it cost to get there."""

    seq: int
    accepted: list[int] = field(default_factory=list)
    rejected: list[RowRejection] = field(default_factory=list)
    attempts: int = 0
    http_status: int | None = None
    rate_limited: int = 0
    job_ids: list[str] = field(default_factory=list)
    sent_at: float | None = None  # wall clock of the first request let through for this batch
    finished_at: float | None = None
    # Row refs in the order of each job's items, so bulk-job errors (by index) map back to rows.
    job_rows: dict[str, list[int]] = field(default_factory=dict)
    # Identifiers of each job's items in the same order (jobs that settle later only), so a refusal
    # whose pointer names no item is still matched by its original_payload.
    job_keys: dict[str, list[Keys]] = field(default_factory=dict)
    # Items Klaviyo refused without naming their row: still in ``accepted`` (which rows is unknown),
    # but not counted as applied.
    unattributed: int = 0

    @property
    def applied(self) -> int:
        """Items Klaviyo applied: accepted rows less refusals it did not attribute to a row."""
        return max(0, len(self.accepted) - self.unattributed)

    @property
    def job_id(self) -> str | None:
        return self.job_ids[0] if self.job_ids else None


def _rejection(row_ref: int, error: ErrorDetail | None) -> RowRejection:
    if error is None:
        return RowRejection(row_ref, "invalid", "Klaviyo rejected this item")
    return RowRejection(row_ref, error.code or "invalid", error.detail or error.title, error.pointer)


async def send_batch(
    client: KlaviyoClient,
    endpoint: Endpoint,
    batch: Batch,
    *,
    prefix: bytes,
    suffix: bytes,
    path_params: Mapping[str, str] | None = None,
    stats: AttemptStats | None = None,
) -> BatchOutcome:
    """Send one batch, isolating invalid items; raises AccessDenied and exhausted retryable errors.

    Pass ``stats`` to learn what a batch that raised cost (the requests that went out).
    """
    outcome = BatchOutcome(seq=batch.seq, rejected=list(batch.rejected))
    stats = stats if stats is not None else AttemptStats()
    pending: list[list[tuple[int, bytes]]] = []
    if batch.items:
        pending.append(list(zip(batch.row_refs, batch.items, strict=True)))
    try:
        while pending:
            segment = pending.pop()
            body = prefix + b",".join(item for _, item in segment) + suffix
            try:
                response = await client.send_bulk(endpoint, body, path_params, stats)
            except ValidationFailed as invalid:
                by_index: dict[int, ErrorDetail] = {}
                for error in invalid.errors:
                    if error.index is not None and 0 <= error.index < len(segment):
                        by_index.setdefault(error.index, error)
                if by_index:
                    outcome.rejected.extend(_rejection(segment[i][0], e) for i, e in sorted(by_index.items()))
                    rest = [entry for i, entry in enumerate(segment) if i not in by_index]
                    if rest:
                        pending.append(rest)
                elif len(segment) == 1:
                    outcome.rejected.append(
                        _rejection(segment[0][0], invalid.errors[0] if invalid.errors else None)
                    )
                else:
                    # No pointer: halve until each bad item stands alone. Push the second half first
                    # so the first is sent first and rows keep their order.
                    middle = len(segment) // 2
                    pending.append(segment[middle:])
                    pending.append(segment[:middle])
                continue
            refs = [ref for ref, _ in segment]
            outcome.accepted.extend(refs)
            if response.id:
                outcome.job_ids.append(response.id)
                outcome.job_rows[response.id] = refs
                if endpoint.settles:
                    outcome.job_keys[response.id] = [item_keys(item) for _, item in segment]
    finally:
        outcome.attempts = stats.attempts
        outcome.http_status = stats.last_status
        outcome.rate_limited = stats.rate_limited
        outcome.sent_at = stats.first_sent_at
        outcome.finished_at = time.time()
    return outcome


async def send_items(
    client: KlaviyoClient,
    endpoint: Endpoint,
    items: Iterable[tuple[int, Any]] | AsyncIterable[tuple[int, Any]],
    *,
    concurrency: int = 4,
    relationships: dict[str, Any] | None = None,
    attributes: dict[str, Any] | None = None,
    path_params: Mapping[str, str] | None = None,
    max_items: int | None = None,
    start_seq: int = 0,
) -> AsyncIterator[BatchOutcome]:
    """Batch a run's items and send them, ``concurrency`` requests at a time; yields outcomes as they finish.

    On the first AccessDenied (or exhausted retry) no new batch starts; those in flight finish and are
    yielded, then the error propagates. Unsent batches are simply not yielded: resume from the rows.
    """
    prefix, suffix = endpoint.envelope_parts(relationships, attributes)
    running: set[asyncio.Task[BatchOutcome]] = set()
    failure: BaseException | None = None
    stream = iter_batches(
        items,
        endpoint,
        relationships=relationships,
        attributes=attributes,
        max_items=max_items,
        start_seq=start_seq,
    )
    try:
        async for batch in stream:
            running.add(
                asyncio.create_task(
                    send_batch(client, endpoint, batch, prefix=prefix, suffix=suffix, path_params=path_params)
                )
            )
            if len(running) >= concurrency:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is None:
                        yield task.result()
                    elif failure is None:
                        failure = task.exception()
                if failure is not None:
                    break
        # Let what is already in flight finish so every batch that landed is reported, then fail.
        while running:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    yield task.result()
                elif failure is None:
                    failure = task.exception()
        if failure is not None:
            raise failure
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
