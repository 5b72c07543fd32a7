"""Retries by meaning: 429, 5xx and network faults retry with capped jittered backoff; other 4xx never."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
)

from klaviyo.errors import KlaviyoError, RateLimited

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: attempts, total time, and the backoff curve (seconds)."""

    max_attempts: int = 8
    max_time: float = 600.0
    base: float = 0.5
    cap: float = 30.0


@dataclass
class AttemptStats:
    """What the retries of one call (or one batch) cost."""

    attempts: int = 0
    rate_limited: int = 0
    last_status: int | None = None
    first_sent_at: float | None = None  # wall clock when the first attempt was let through


def is_retryable(error: BaseException) -> bool:
    """True for 429, 5xx, timeouts, dropped connections and malformed 2xx bodies."""
    return isinstance(error, KlaviyoError) and error.retryable


def backoff(policy: RetryPolicy, attempt: int) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    return random.uniform(0, min(policy.cap, policy.base * 2 ** max(0, attempt - 1)))


class _Wait:
    """tenacity wait: Retry-After for 429s (unless a shared limiter already waits it out), else backoff."""

    def __init__(self, policy: RetryPolicy, limiter_handles_429: bool):
        self.policy = policy
        self.limiter_handles_429 = limiter_handles_429

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RateLimited):
            # A little jitter so every worker does not return in the same millisecond.
            jitter = random.uniform(0, 0.05 * max(error.retry_after, 0.02))
            return jitter if self.limiter_handles_429 else error.retry_after + jitter
        return backoff(self.policy, state.attempt_number)


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    stats: AttemptStats | None = None,
    limiter_handles_429: bool = False,
) -> T:
    """Await ``fn()`` until it succeeds, a non-retryable error occurs, or the policy is used up."""
    stats = stats if stats is not None else AttemptStats()
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts) | stop_after_delay(policy.max_time),
        wait=_Wait(policy, limiter_handles_429),
        retry=retry_if_exception(is_retryable),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            stats.attempts += 1
            try:
                result = await fn()
            except KlaviyoError as error:
                stats.last_status = error.status
                if isinstance(error, RateLimited):
                    stats.rate_limited += 1
                raise
            return result
    raise AssertionError("unreachable: tenacity either returns or reraises")
