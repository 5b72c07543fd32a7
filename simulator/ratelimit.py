"""Fixed-window rate limits per (account, endpoint class): burst (1 s) and steady (60 s) at once."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from simulator.config import Limit

BURST_SECONDS = 1.0
STEADY_SECONDS = 60.0


@dataclass
class Decision:
    """The outcome of one acquire: allowed or not, and the values for the RateLimit headers."""

    allowed: bool
    limit: Limit
    remaining: int
    reset: float
    retry_after: float
    burst_window: float
    steady_window: float
    steady_remaining: int = 0
    steady_reset: float = 0.0

    def headers(self, scaled: bool) -> list[tuple[bytes, bytes]]:
        """RateLimit-* on an answered request, Retry-After alone on a 429 (docs/contracts.md).

        As Klaviyo's guide "Rate limits, status codes, and errors" documents: every non-429 answer
        carries RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset describing the *steady*
        window, and a 429 carries none of them, only Retry-After.
        """
        if not self.allowed:
            return [(b"retry-after", fmt_seconds(self.retry_after, scaled).encode())]
        steady = self.limit.steady
        limit = f"{steady}, {steady};w={fmt_seconds(self.steady_window, scaled)}"
        return [
            (b"ratelimit-limit", limit.encode()),
            (b"ratelimit-remaining", str(self.steady_remaining).encode()),
            (b"ratelimit-reset", fmt_seconds(self.steady_reset, scaled).encode()),
        ]


def fmt_seconds(seconds: float, scaled: bool) -> str:
    """Whole seconds (rounded up) at real time; up to 3 decimals when time-scaled."""
    if not scaled:
        return str(max(1, math.ceil(seconds - 1e-9)))
    value = max(0.001, math.ceil(seconds * 1000) / 1000)
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text


class RateLimiter:
    """Two fixed windows per key; windows are aligned to multiples of their (scaled) length."""

    def __init__(self) -> None:
        # key -> [burst_window_index, burst_count, steady_window_index, steady_count]
        self._windows: dict[tuple[str, str], list[float]] = {}

    def reset(self) -> None:
        """Forget all counts."""
        self._windows.clear()

    def acquire(
        self, key: tuple[str, str], limit: Limit, time_scale: float, enforce: bool = True
    ) -> Decision:
        """Count one request unless it would exceed a window (when ``enforce``)."""
        scale = time_scale if time_scale > 0 else 1.0
        burst_len = BURST_SECONDS / scale
        steady_len = STEADY_SECONDS / scale
        now = time.monotonic()
        b_idx = math.floor(now / burst_len)
        s_idx = math.floor(now / steady_len)
        win = self._windows.get(key)
        if win is None:
            win = [b_idx, 0, s_idx, 0]
            self._windows[key] = win
        if win[0] != b_idx:
            win[0], win[1] = b_idx, 0
        if win[2] != s_idx:
            win[2], win[3] = s_idx, 0
        b_reset = (b_idx + 1) * burst_len - now
        s_reset = (s_idx + 1) * steady_len - now
        burst_full = win[1] >= limit.burst
        steady_full = win[3] >= limit.steady
        if enforce and (burst_full or steady_full):
            # Retry when every exhausted window has rolled over.
            retry = max(b_reset if burst_full else 0.0, s_reset if steady_full else 0.0)
            b_rem = max(0, limit.burst - int(win[1]))
            s_rem = max(0, limit.steady - int(win[3]))
            return Decision(
                False, limit, min(b_rem, s_rem), retry, retry, burst_len, steady_len, s_rem, s_reset
            )
        win[1] += 1
        win[3] += 1
        b_rem = max(0, limit.burst - int(win[1]))
        s_rem = max(0, limit.steady - int(win[3]))
        # The tighter window is the one with fewer requests left; it decides the reset.
        reset = b_reset if b_rem < s_rem else s_reset
        if b_rem == s_rem:
            reset = min(b_reset, s_reset) if b_rem else max(b_reset, s_reset)
        return Decision(True, limit, min(b_rem, s_rem), reset, 0.0, burst_len, steady_len, s_rem, s_reset)
