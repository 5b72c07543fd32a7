"""Error parsing and the retry decision by meaning."""

from __future__ import annotations

import pytest

from klaviyo.errors import (
    AuthError,
    Conflict,
    NetworkError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ScopeError,
    ServerError,
    ValidationFailed,
    error_for_response,
    item_index,
)
from klaviyo.retry import AttemptStats, RetryPolicy, call_with_retry, is_retryable
from klaviyo.serialization import dumps


def body(status: int, code: str, pointer: str | None = None, meta: dict | None = None) -> bytes:
    entry: dict = {"id": "e1", "status": status, "code": code, "title": "t", "detail": f"{code} detail"}
    if pointer:
        entry["source"] = {"pointer": pointer}
    if meta:
        entry["meta"] = meta
    return dumps({"errors": [entry]})


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, ValidationFailed, False),
        (401, AuthError, False),
        (403, ScopeError, False),
        (404, NotFound, False),
        (409, Conflict, False),
        (413, PayloadTooLarge, False),
        (429, RateLimited, True),
        (500, ServerError, True),
        (503, ServerError, True),
    ],
)
def test_status_maps_to_a_meaning(status: int, kind: type, retryable: bool) -> None:
    error = error_for_response(status, body(status, "x"), {"retry-after": "0.25"})
    assert type(error) is kind
    assert is_retryable(error) is retryable
    assert error.status == status


def test_validation_items_carry_pointer_index_code_detail() -> None:
    pointer = "/data/attributes/events-bulk-create/data/3/attributes/profile/data/attributes/email"
    error = error_for_response(400, body(400, "invalid", pointer), {})
    assert isinstance(error, ValidationFailed)
    assert error.items == [(pointer, 3, "invalid", "invalid detail")]
    assert (
        item_index("/data/7") == 7
        and item_index("/data/attributes/name") is None
        and item_index(None) is None
    )


def test_conflict_names_the_duplicate_profile_and_429_its_wait() -> None:
    error = error_for_response(
        409, body(409, "duplicate_profile", meta={"duplicate_profile_id": "01ABC"}), {}
    )
    assert isinstance(error, Conflict) and error.duplicate_profile_id == "01ABC"
    limited = error_for_response(429, body(429, "throttled"), {"retry-after": "0.25"})
    assert isinstance(limited, RateLimited) and limited.retry_after == 0.25


def test_unparseable_error_bodies_still_map() -> None:
    error = error_for_response(502, b"<html>Bad gateway</html>", {})
    assert isinstance(error, ServerError) and error.errors[0].code == "unparseable"


async def test_retry_stops_at_non_retryable_and_counts_attempts() -> None:
    policy = RetryPolicy(max_attempts=5, base=0.001, cap=0.002)
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise NetworkError("dropped")
        return "ok"

    stats = AttemptStats()
    assert await call_with_retry(flaky, policy, stats) == "ok"
    assert stats.attempts == 3

    async def invalid() -> None:
        raise ValidationFailed("bad", 400)

    stats = AttemptStats()
    with pytest.raises(ValidationFailed):
        await call_with_retry(invalid, policy, stats)
    assert stats.attempts == 1

    async def limited() -> None:
        raise RateLimited("slow down", retry_after=0.01)

    stats = AttemptStats()
    with pytest.raises(RateLimited):
        await call_with_retry(limited, policy, stats)
    assert stats.attempts == 5 and stats.rate_limited == 5
