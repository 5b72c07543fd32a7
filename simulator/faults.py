"""Fault injection: 5xx answers, latency, dropped connections, malformed bodies, 429 storms."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from simulator.config import SimConfig

MALFORMED_BODY = b'{"data": {"type": "event-bulk-create-job", "attributes": {'


class DroppedConnection(Exception):
    """Raised when the transport could not be found; the server then closes the connection."""


def roll(config: SimConfig, share: float) -> bool:
    """True with probability ``share``."""
    return share > 0 and config.rng.random() < share


def storm_remaining(config: SimConfig) -> float:
    """Real seconds left in a 429 storm (0 when none)."""
    return max(0.0, config.faults.storm_until - time.monotonic())


def pick_error_status(config: SimConfig, route: str = "") -> int | None:
    """A 5xx status to answer with instead of processing, or None."""
    faults = config.faults
    if route and route in faults.failing_routes:
        return 503
    if roll(config, faults.error_share):
        return int(config.rng.choice(faults.error_statuses or [503]))
    return None


async def maybe_delay(config: SimConfig) -> None:
    """Sleep a random time in [latency_min, latency_max] real seconds."""
    faults = config.faults
    if faults.latency_max > 0:
        await asyncio.sleep(config.rng.uniform(faults.latency_min, faults.latency_max))


def drop_connection(send: Any) -> None:
    """Close the client's TCP connection without an answer.

    Uvicorn turns an exception raised before the response starts into a 500, which a client would
    see as an answer; instead we reach the transport through the bound ``send`` of uvicorn's
    request cycle and abort it, so the client sees a transport error.
    """
    cycle: Any = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise DroppedConnection("no transport to drop")
    transport.abort()
    # Tell the cycle the peer is gone so uvicorn neither writes a 500 nor logs an error.
    cycle.disconnected = True
    cycle.response_complete = True
