"""Measure the simulator: `python -m simulator.bench [--requests 200] [--http]`.

In-process mode calls the ASGI app directly (server-side cost of one 1,000-event bulk request);
--http sends the same bodies over real HTTP to a `python -m simulator` subprocess, 4 at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx
import orjson

from simulator.app import SimulatorApp
from simulator.config import SANDBOX_KEY, SimConfig
from simulator.server import SimulatorProcess, klaviyo_headers

PATH = "/api/event-bulk-create-jobs"


def make_body(batch: int, size: int = 1000) -> bytes:
    """One event-bulk-create-job body of ``size`` Placed Order events."""
    items = []
    for i in range(size):
        n = batch * size + i
        event = {
            "properties": {"OrderId": str(n), "Items": [{"SKU": "A", "Qty": 1}], "ItemNames": ["A"]},
            "time": "2024-01-02T03:04:05Z",
            "value": 12.5,
            "value_currency": "USD",
            "unique_id": f"order-{n}",
            "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
        }
        items.append(
            {
                "type": "event-bulk-create",
                "attributes": {
                    "profile": {
                        "data": {"type": "profile", "attributes": {"email": f"c{n % 5000}@shop.test"}}
                    },
                    "events": {"data": [{"type": "event", "attributes": event}]},
                },
            }
        )
    envelope = {
        "data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": items}}}
    }
    return orjson.dumps(envelope)


async def in_process(bodies: list[bytes]) -> list[float]:
    """Seconds per request, calling the ASGI app without a network."""
    app = SimulatorApp(SimConfig(limits_enabled=False))
    headers = [
        (b"authorization", f"Klaviyo-API-Key {SANDBOX_KEY}".encode()),
        (b"revision", b"2026-10-15"),
        (b"host", b"bench"),
    ]
    timings = []
    for body in bodies:
        scope = {"type": "http", "method": "POST", "path": PATH, "query_string": b"", "headers": headers}
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive(messages: list[dict[str, Any]] = messages) -> dict[str, Any]:
            return messages.pop(0)

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        started = time.perf_counter()
        await app(scope, receive, send)
        timings.append(time.perf_counter() - started)
        assert sent[0]["status"] == 202, sent
    return timings


async def over_http(base_url: str, bodies: list[bytes], concurrency: int = 4) -> tuple[float, list[float]]:
    """Wall time and per-request latencies for sending ``bodies`` over HTTP."""
    queue = list(bodies)
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=base_url, headers=klaviyo_headers(), timeout=60) as client:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                started = time.perf_counter()
                response = await client.post(PATH, content=body)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 202, response.text[:200]

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        return time.perf_counter() - started, latencies


def _summary(values: list[float]) -> str:
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000

    return f"p50 {pick(0.5):.1f} ms, p95 {pick(0.95):.1f} ms, max {ordered[-1] * 1000:.1f} ms"


def main() -> None:
    """Run the chosen measurement and print a one-line summary."""
    parser = argparse.ArgumentParser(prog="python -m simulator.bench")
    parser.add_argument("--requests", type=int, default=200, help="number of 1,000-event requests")
    parser.add_argument("--http", action="store_true", help="over HTTP to a subprocess")
    args = parser.parse_args()
    bodies = [make_body(k) for k in range(args.requests)]
    events = args.requests * 1000
    if args.http:
        with SimulatorProcess(no_limits=True) as proc:
            elapsed, latencies = asyncio.run(over_http(proc.base_url, bodies))
        rate = events / elapsed
        print(f"http: {events} events in {elapsed:.1f} s = {rate:,.0f} events/s; {_summary(latencies)}")
    else:
        timings = asyncio.run(in_process(bodies))
        print(f"in-process: 1,000-event bulk request {_summary(timings)} over {args.requests} requests")


if __name__ == "__main__":
    main()
