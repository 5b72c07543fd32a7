"""Cut a stream of (row_ref, item) into request bodies under an endpoint's count and byte limits.

Each item is serialized exactly once; a body is the envelope's prefix and suffix around the item
bytes joined by commas, so its size is known before it is built.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from klaviyo.endpoints import Endpoint
from klaviyo.serialization import NotSerializableError, check_finite, dumps_kept


@dataclass(frozen=True)
class RowRejection:
    """A row that did not land: its row_ref, a machine code, a human detail, and Klaviyo's pointer."""

    row_ref: int
    code: str
    detail: str
    pointer: str | None = None
    count: int = 1  # items it stands for: more than one only for refusals naming no row (row_ref 0)


@dataclass
class Batch:
    """One request's worth of serialized items, plus rows refused while it was being filled."""

    seq: int
    row_refs: list[int] = field(default_factory=list)
    items: list[bytes] = field(default_factory=list)
    rejected: list[RowRejection] = field(default_factory=list)
    size: int = 0  # body bytes, envelope included

    def __len__(self) -> int:
        return len(self.items)


class Batcher:
    """Fills batches one item at a time: ``add`` returns a full batch when one closes; ``flush`` the rest."""

    def __init__(
        self,
        endpoint: Endpoint,
        relationships: dict[str, Any] | None = None,
        attributes: dict[str, Any] | None = None,
        max_items: int | None = None,
        max_bytes: int | None = None,
        start_seq: int = 0,
    ):
        self.endpoint = endpoint
        self.prefix, self.suffix = endpoint.envelope_parts(relationships, attributes)
        self.max_items = min(max_items or endpoint.max_items, endpoint.max_items)
        self.max_bytes = min(max_bytes or endpoint.max_bytes, endpoint.max_bytes)
        self.max_item_bytes = endpoint.max_item_bytes
        self._empty_size = len(self.prefix) + len(self.suffix)
        self._seq = start_seq
        self._current = self._new()

    def _new(self) -> Batch:
        batch = Batch(seq=self._seq, size=self._empty_size)
        self._seq += 1
        return batch

    def body(self, batch: Batch) -> bytes:
        return self.prefix + b",".join(batch.items) + self.suffix

    def add(self, row_ref: int, item: Any) -> Batch | None:
        """Add one item; returns the batch it closed, if adding it closed one."""
        current = self._current
        try:
            encoded = dumps_kept(item)
            # orjson writes NaN and infinity as null, so only a body with a null needs the slow walk.
            if b"null" in encoded:
                check_finite(item)
        except (NotSerializableError, TypeError) as error:
            current.rejected.append(RowRejection(row_ref, "not_serializable", str(error)))
            return None
        if self.max_item_bytes is not None and len(encoded) > self.max_item_bytes:
            detail = f"item is {len(encoded):,} bytes; the limit per item is {self.max_item_bytes:,}"
            current.rejected.append(RowRejection(row_ref, "item_too_large", detail))
            return None
        if self._empty_size + len(encoded) > self.max_bytes:
            detail = f"item is {len(encoded):,} bytes; a request may carry at most {self.max_bytes:,}"
            current.rejected.append(RowRejection(row_ref, "item_too_large", detail))
            return None
        closed = None
        separator = 1 if current.items else 0
        if current.items and (
            len(current.items) >= self.max_items or current.size + separator + len(encoded) > self.max_bytes
        ):
            closed = current
            current = self._current = self._new()
            separator = 0
        current.items.append(encoded)
        current.row_refs.append(row_ref)
        current.size += separator + len(encoded)
        return closed

    def flush(self) -> Batch | None:
        """The last, partly filled batch (or one carrying only rejections), if any."""
        current = self._current
        if not current.items and not current.rejected:
            return None
        self._current = self._new()
        return current


async def iter_batches(
    items: Iterable[tuple[int, Any]] | AsyncIterable[tuple[int, Any]],
    endpoint: Endpoint,
    *,
    relationships: dict[str, Any] | None = None,
    attributes: dict[str, Any] | None = None,
    max_items: int | None = None,
    max_bytes: int | None = None,
    start_seq: int = 0,
) -> AsyncIterator[Batch]:
    """Batches from a sync or async stream of (row_ref, item)."""
    batcher = Batcher(endpoint, relationships, attributes, max_items, max_bytes, start_seq)
    if isinstance(items, AsyncIterable):
        async for row_ref, item in items:
            closed = batcher.add(row_ref, item)
            if closed is not None:
                yield closed
    else:
        for row_ref, item in items:
            closed = batcher.add(row_ref, item)
            if closed is not None:
                yield closed
    last = batcher.flush()
    if last is not None:
        yield last


def batches(
    items: Iterable[tuple[int, Any]],
    endpoint: Endpoint,
    *,
    relationships: dict[str, Any] | None = None,
    attributes: dict[str, Any] | None = None,
    max_items: int | None = None,
    max_bytes: int | None = None,
) -> Iterable[Batch]:
    """The synchronous twin of iter_batches (for previews and dry runs)."""
    batcher = Batcher(endpoint, relationships, attributes, max_items, max_bytes)
    for row_ref, item in items:
        closed = batcher.add(row_ref, item)
        if closed is not None:
            yield closed
    last = batcher.flush()
    if last is not None:
        yield last
