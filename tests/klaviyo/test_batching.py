"""Batching under count and byte limits, and the serialization every body goes through."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from klaviyo import endpoints as ep
from klaviyo.batching import Batcher, batches, iter_batches
from klaviyo.serialization import NotSerializableError, dumps, loads


def event(n: int, **props: object) -> dict:
    return {
        "type": "event-bulk-create",
        "attributes": {
            "profile": {"data": {"type": "profile", "attributes": {"email": f"u{n}@shop.test"}}},
            "events": {
                "data": [
                    {
                        "type": "event",
                        "attributes": {
                            "properties": {"n": n, **props},
                            "time": "2024-05-01T10:00:00+00:00",
                            "unique_id": f"e{n}",
                            "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
                        },
                    }
                ]
            },
        },
    }


def test_count_limit_splits_at_the_endpoint_maximum() -> None:
    out = list(batches(((i + 1, event(i)) for i in range(2500)), ep.BULK_EVENTS))
    assert [len(b) for b in out] == [1000, 1000, 500]
    assert [b.seq for b in out] == [0, 1, 2]
    assert out[1].row_refs[0] == 1001


def test_byte_limit_keeps_every_body_under_it_and_bodies_are_exact() -> None:
    batcher = Batcher(ep.BULK_EVENTS, max_bytes=20_000)
    items = [(i + 1, event(i, note="x" * (i % 700))) for i in range(300)]
    out = [b for i, item in items if (b := batcher.add(i, item))]
    if (last := batcher.flush()) is not None:
        out.append(last)
    assert sum(len(b) for b in out) == 300
    for batch in out:
        body = batcher.body(batch)
        assert len(body) == batch.size <= 20_000
        # The concatenated body is exactly what serializing the whole envelope would give.
        parsed = loads(body)
        assert body == dumps(parsed)
        assert parsed["data"]["type"] == "event-bulk-create-job"
        assert len(parsed["data"]["attributes"]["events-bulk-create"]["data"]) == len(batch)
    # Filling is greedy: each batch but the last could not take the next item.
    first_next = len(dumps(items[len(out[0])][1]))
    assert out[0].size + 1 + first_next > 20_000


def test_oversized_item_becomes_a_row_error_not_a_crash() -> None:
    huge = {"type": "profile", "attributes": {"email": "big@shop.test", "properties": {"bio": "x" * 200_000}}}
    rows = [
        (1, {"type": "profile", "attributes": {"email": "a@shop.test"}}),
        (2, huge),
        (3, {"type": "profile"}),
    ]
    out = list(batches(rows, ep.BULK_PROFILES))
    assert len(out) == 1
    assert out[0].row_refs == [1, 3]
    assert [(r.row_ref, r.code) for r in out[0].rejected] == [(2, "item_too_large")]


def test_item_larger_than_a_whole_request_is_rejected() -> None:
    big = event(1, blob="y" * 6_000_000)
    out = list(batches([(1, big), (2, event(2))], ep.BULK_EVENTS))
    assert out[0].row_refs == [2]
    assert out[0].rejected[0].code == "item_too_large"


def test_nan_and_unknown_types_are_refused_per_row() -> None:
    rows = [
        (1, event(1, v=float("nan"))),
        (2, event(2, v=Decimal("NaN"))),
        (3, event(3, v=object())),
        (4, event(4)),
    ]
    out = list(batches(rows, ep.BULK_EVENTS))
    assert out[0].row_refs == [4]
    assert [(r.row_ref, r.code) for r in out[0].rejected] == [
        (1, "not_serializable"),
        (2, "not_serializable"),
        (3, "not_serializable"),
    ]


def test_serialization_of_decimal_datetime_and_non_ascii() -> None:
    paris = timezone(timedelta(hours=2))
    doc = {
        "price": Decimal("19.90"),
        "qty": Decimal("3"),
        "at": datetime(2024, 5, 1, 12, 30, 5, tzinfo=paris),
        "utc": datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
        "naive": datetime(2024, 5, 1, 10, 0),
        "name": "Crème brûlée – 東京 🍮",
    }
    raw = dumps(doc)
    assert b'"price":19.9' in raw and b'"qty":3,' in raw
    assert b'"at":"2024-05-01T12:30:05+02:00"' in raw
    assert b'"utc":"2024-05-01T10:00:00Z"' in raw and b'"naive":"2024-05-01T10:00:00Z"' in raw
    assert loads(raw)["name"] == "Crème brûlée – 東京 🍮"
    assert "東京".encode() in raw  # UTF-8, not \\u escapes
    with pytest.raises((NotSerializableError, TypeError)):  # orjson wraps it in its TypeError
        dumps({"v": Decimal("Infinity")})


async def test_async_and_sync_sources_batch_alike() -> None:
    rows = [(i + 1, event(i)) for i in range(1500)]

    async def source():
        for row in rows:
            yield row

    from_async = [b async for b in iter_batches(source(), ep.BULK_EVENTS)]
    from_sync = [b async for b in iter_batches(rows, ep.BULK_EVENTS)]
    assert [b.row_refs for b in from_async] == [b.row_refs for b in from_sync]
    assert [len(b) for b in from_async] == [1000, 500]


def test_list_membership_envelope_is_top_level_data() -> None:
    body = ep.ADD_LIST_MEMBERS.envelope_bytes([dumps({"type": "profile", "id": "P1"})])
    assert loads(body) == {"data": [{"type": "profile", "id": "P1"}]}
    rel = {"lists": {"data": [{"type": "list", "id": "L1"}]}}
    body = ep.BULK_PROFILES.envelope_bytes([b'{"type":"profile","attributes":{"email":"a@b.c"}}'], rel)
    assert loads(body)["data"]["relationships"] == rel


def test_a_batch_holds_its_items_in_about_their_own_size() -> None:
    # orjson 3.12+ leaves each dumps() result in a buffer of at least 4 KB: a batch of 1,000 events
    # of ~400 bytes held while its bulk job settles cost 4 MB instead of 0.4 MB.
    import gc
    import tracemalloc

    items = [(i + 1, event(i)) for i in range(1000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        (batch,) = list(batches(iter(items), ep.BULK_EVENTS))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    serialized = sum(len(item) for item in batch.items)
    assert held < 2 * serialized, f"{held:,} bytes held for {serialized:,} bytes of items"
