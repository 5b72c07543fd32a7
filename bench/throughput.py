"""Bulk-event throughput through the shared Redis limiter against the simulator at Klaviyo's real limits.

    python -m bench.throughput [--quick] [--events N] [--processes P] [--time-scale S]

Starts the simulator as a subprocess (time-scaled), sends events as bulk jobs of 1,000 from P OS
processes sharing one Redis limiter, then measures the naive path (one POST /api/events per event)
for one steady window. Rates are in real (unscaled) terms. The last line is a key=value summary.

Why "whole windows": a run may spend its first window's allowance at once, so events / wall time
over a run of a few windows overstates what can be sustained. We count the events of the batches let
through (granted and sent) within the whole steady windows from the first one, divided by their length.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from klaviyo import endpoints as ep
from klaviyo.client import KlaviyoClient
from klaviyo.limiter import RateLimiter
from klaviyo.retry import RetryPolicy
from klaviyo.sender import send_items

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
SANDBOX_KEY = "pk_sandbox_0000000000000000000000000000"
STEADY_SECONDS = 60.0
BULK_CEILING = ep.EVENTS_BULK.steady * ep.BULK_EVENTS.max_items / STEADY_SECONDS  # 2,500 events/s
NAIVE_CEILING = ep.EVENTS.steady / STEADY_SECONDS  # 58.3 events/s


def event_attributes(n: int) -> dict[str, Any]:
    return {
        "properties": {"OrderId": f"B{n}", "ItemNames": ["Mug", "Tea"], "Source": "bench"},
        "time": "2025-06-01T12:00:00+00:00",
        "value": 24.5,
        "value_currency": "USD",
        "unique_id": f"bench-{n}",
        "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
    }


def bulk_item(n: int) -> dict[str, Any]:
    return {
        "type": "event-bulk-create",
        "attributes": {
            "profile": {"data": {"type": "profile", "attributes": {"email": f"c{n % 20000}@shop.test"}}},
            "events": {"data": [{"type": "event", "attributes": event_attributes(n)}]},
            "backfill": True,
        },
    }


def single_event(n: int) -> dict[str, Any]:
    attrs = event_attributes(n)
    attrs["profile"] = {"data": {"type": "profile", "attributes": {"email": f"c{n % 20000}@shop.test"}}}
    return {"type": "event", "attributes": attrs}


def limiter_for(redis: Redis, prefix: str, scale: float) -> RateLimiter:
    return RateLimiter(redis, prefix=prefix, time_scale=scale)


async def worker(args: argparse.Namespace) -> None:
    """One sender process: its share of the events, as bulk jobs, paced by the shared limiter."""
    redis = Redis.from_url(REDIS_URL)
    limiter = limiter_for(redis, args.prefix, args.time_scale)
    policy = RetryPolicy(max_attempts=20, base=0.05, cap=2.0)
    records: list[tuple[float, int, int, int, float | None]] = []
    rows = ((n, bulk_item(n)) for n in range(args.first, args.first + args.count))
    async with KlaviyoClient(SANDBOX_KEY, base_url=args.base_url, limiter=limiter, retry=policy) as client:
        await asyncio.sleep(max(0.0, args.start_at - time.time()))
        async for outcome in send_items(client, ep.BULK_EVENTS, rows, concurrency=args.concurrency):
            sent_at = outcome.sent_at or time.time()
            records.append(
                (sent_at, len(outcome.accepted), outcome.attempts, outcome.rate_limited, outcome.finished_at)
            )
    await redis.aclose()
    Path(args.out).write_text(json.dumps(records))


def whole_window_rate(times_counts: list[tuple[float, int]], window: float) -> tuple[float, int, float]:
    """(events per scaled second over whole windows, windows counted, wall seconds)."""
    times_counts.sort()
    first, last = times_counts[0][0], times_counts[-1][0]
    wall = last - first
    windows = math.floor(wall / window)
    if windows < 1:
        return sum(c for _, c in times_counts) / max(wall, 1e-9), 0, wall
    end = first + windows * window
    counted = sum(c for t, c in times_counts if t < end)
    return counted / (windows * window), windows, wall


async def naive(base_url: str, prefix: str, scale: float, concurrency: int) -> tuple[float, int]:
    """One POST /api/events per event for one whole steady window: (real events/s, 429s)."""
    window = STEADY_SECONDS / scale
    redis = Redis.from_url(REDIS_URL)
    limiter = limiter_for(redis, prefix, scale)
    done: list[float] = []
    rate_limited = 0
    counter = iter(range(10_000_000, 20_000_000))
    deadline = [math.inf]
    async with KlaviyoClient(SANDBOX_KEY, base_url=base_url, limiter=limiter) as client:

        async def one() -> None:
            nonlocal rate_limited
            while time.time() < deadline[0]:
                try:
                    await client.create_event(single_event(next(counter)))
                except Exception:  # noqa: BLE001 - a benchmark counts, it does not stop
                    rate_limited += 1
                    continue
                done.append(time.time())
                if len(done) == 1:
                    deadline[0] = done[0] + window + 0.05

        await asyncio.gather(*(one() for _ in range(concurrency)))
    await redis.aclose()
    counted = sum(1 for t in done if t < done[0] + window)
    return counted / window / scale, rate_limited


async def warm_up(base_url: str, prefix: str, scale: float) -> None:
    redis = Redis.from_url(REDIS_URL)
    async with KlaviyoClient(
        SANDBOX_KEY, base_url=base_url, limiter=limiter_for(redis, prefix, scale)
    ) as client:
        await client.bulk_create_events([bulk_item(-1)])
    await redis.aclose()


def sim_stats(base_url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{base_url}/__sim/stats", timeout=30).json())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events: under a minute")
    parser.add_argument("--events", type=int)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight per process")
    # The simulator validates every event with the SDK's models (~0.1 ms each) on one core: above
    # about 2.5x it, not the limiter, becomes the bottleneck on a 2-core machine.
    parser.add_argument("--time-scale", type=float, help="default 2 (quick: 2.5)")
    # worker mode (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker(args))
        return
    run(args)


def run(args: argparse.Namespace) -> None:
    from simulator.server import SimulatorProcess

    events = args.events or (150_000 if args.quick else 1_000_000)
    scale = args.time_scale or (2.5 if args.quick else 2.0)
    window = STEADY_SECONDS / scale
    prefix = f"bench:{uuid.uuid4().hex[:8]}"
    print(f"simulator: real limits (bulk events 10/s, 150/min), scaled {scale:g}x: steady window {window:g}s")
    print(f"sending {events:,} events as bulk jobs of 1,000 from {args.processes} processes")
    with SimulatorProcess(time_scale=scale) as sim, tempfile.TemporaryDirectory() as tmp:
        # One small job first (through the limiter, so it is counted): the simulator's first request
        # builds its validators, and a slow first answer would skew the first window.
        asyncio.run(warm_up(sim.base_url, prefix, scale))
        share = math.ceil(events / args.processes / 1000) * 1000
        start_at = time.time() + 2.0  # all processes begin together, after their imports
        procs, outs = [], []
        for i in range(args.processes):
            first = i * share
            count = max(0, min(share, events - first))
            out = str(Path(tmp) / f"w{i}.json")
            outs.append(out)
            command = [
                sys.executable, "-m", "bench.throughput", "--worker", "--base-url", sim.base_url,
                "--prefix", prefix, "--first", str(first), "--count", str(count),
                "--start-at", str(start_at), "--out", out, "--time-scale", str(scale),
                "--concurrency", str(args.concurrency),
            ]  # fmt: skip
            procs.append(subprocess.Popen(command, cwd=ROOT))
        codes = [p.wait() for p in procs]
        if any(codes):
            raise SystemExit(f"a sender process failed: exit codes {codes}")
        records = [r for out in outs for r in json.loads(Path(out).read_text())]
        stats = sim_stats(sim.base_url)

        scaled_rate, windows, wall = whole_window_rate([(t, n) for t, n, *_ in records], window)
        rate = scaled_rate / scale
        sent = sum(n for _, n, *_ in records)
        bulk_requests = stats["requests"].get("POST /api/event-bulk-create-jobs", {})
        total_bulk = sum(bulk_requests.values()) - 1
        r429 = bulk_requests.get("429", 0)
        stored = stats["accepted"].get("events", 0) - 1  # the warm-up event
        lost = events - stored
        dup = stats["duplicates"]
        print(
            f"bulk: {len(records)} jobs, {sent:,} events accepted, {total_bulk} requests, {r429} answered 429"
        )
        print(f"bulk: wall {wall:.1f}s ({wall * scale:.0f}s real); {windows} whole steady windows measured")
        ratio = rate / BULK_CEILING
        print(
            f"bulk: achieved {rate:,.0f} events/s (real) vs ceiling {BULK_CEILING:,.0f}/s: ratio {ratio:.3f}"
        )
        print(f"simulator: stored {stored:,} of {events:,} (lost {lost}), duplicates dropped {dup}")

        naive_rate, naive_errors = asyncio.run(naive(sim.base_url, prefix, scale, concurrency=8))
        print(
            f"naive: one POST /api/events per event: {naive_rate:,.1f} events/s (its own ceiling"
            f" {NAIVE_CEILING:.1f}/s), {naive_rate / BULK_CEILING:.3f} of the bulk ceiling;"
            f" bulk is {rate / max(naive_rate, 1e-9):.0f}x faster"
        )
    asyncio.run(_cleanup(prefix))
    summary = {
        "events": events,
        "rate": f"{rate:.0f}",
        "ceiling": f"{BULK_CEILING:.0f}",
        "ratio": f"{rate / BULK_CEILING:.3f}",
        "r429_share": f"{r429 / max(total_bulk, 1):.3f}",
        "lost": lost,
        "dup": dup,
        "naive_ratio": f"{naive_rate / BULK_CEILING:.3f}",
    }
    print(" ".join(f"{k}={v}" for k, v in summary.items()))


async def _cleanup(prefix: str) -> None:
    redis = Redis.from_url(REDIS_URL)
    keys = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


if __name__ == "__main__":
    main()
