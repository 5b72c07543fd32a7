"""Real-time ingest under sustained load: POSTs to the ingest API from a load generator on loopback.

    python -m bench.ingest [--quick] [--rps R] [--seconds S] [--time-scale T] [--web-workers W]
                           [--simulator-nice N]

Starts the web app (uvicorn, one process per core as deployed), one worker and the simulator
(Klaviyo's real limits unless --time-scale), creates an event mapping and an ingest source on a
fresh PostgreSQL database, then posts one event per request at R requests/s for S seconds, open
loop: request i is due at i/R and its latency counts from then, so a server that falls behind is
charged for the queue it causes. Every 50th request repeats an earlier event, as a store retrying
would. The simulator runs at nice 10 (``--simulator-nice 0`` to let it compete): it stands in for
Klaviyo's servers, and its SDK validation of each bulk job would otherwise take CPU from the web
processes that no real deployment shares with Klaviyo. Then it waits until the simulator holds
every distinct event. The last line is a key=value summary.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import httpx
import orjson
from arq.connections import ArqRedis

from bench.harness import REDIS_URL, ROOT, fresh_database
from config.settings import Settings
from services.workers import heartbeat_pattern
from simulator.server import SimulatorProcess, free_port
from tests.support.databases import adrop_postgres_database
from tests.support.ingest import event_spec, make_source

ADMIN_DB = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REPEAT_EVERY = 50


class Connection:
    """A bare HTTP/1.1 keep-alive connection: the generator must cost far less CPU than the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        self.reader, self.writer, self.head = reader, writer, head

    @classmethod
    async def open(cls, host: str, port: int, path: str, token: str) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        return cls(reader, writer, head)

    async def post(self, body: bytes) -> tuple[int, bytes]:
        self.writer.write(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        status = int((await self.reader.readline()).split(b" ", 2)[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def record(n: int) -> dict[str, Any]:
    return {
        "id": f"o{n}",
        "email": f"buyer{n % 5000}@shop.test",
        "total": n % 200 + 0.99,
        "time": "2026-11-30T10:00:00Z",
        "channel": "web",
    }


async def load(
    host: str, port: int, path: str, token: str, rps: float, seconds: float, connections: int, first: int = 0
) -> tuple[list[float], int, int, set[str], float]:
    """Post at ``rps`` for ``seconds``: latencies (ms), 202s, other answers, distinct ids, send time."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await Connection.open(host, port, path, token))
    latencies: list[float] = []
    accepted = refused = 0
    ids: set[str] = set()
    total = int(rps * seconds)
    tasks: set[asyncio.Task[None]] = set()

    async def one(n: int, due: float) -> None:
        nonlocal accepted, refused
        event = record(n - 1 if n % REPEAT_EVERY == 0 and n > first else n)
        conn = await idle.get()
        try:
            status, _ = await conn.post(orjson.dumps(event))
        finally:
            idle.put_nowait(conn)
        latencies.append((time.perf_counter() - due) * 1000)
        if status == 202:
            accepted += 1
            ids.add(event["id"])
        else:
            refused += 1

    start = time.perf_counter()
    for n in range(first, first + total):
        due = start + (n - first) / rps
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(n, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    sent_for = time.perf_counter() - start
    while not idle.empty():
        idle.get_nowait().close()
    return latencies, accepted, refused, ids, sent_for


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rps", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument(
        "--web-workers", type=int, default=2, help="uvicorn worker processes (one per core, as deployed)"
    )
    parser.add_argument(
        "--simulator-nice", type=int, default=10, help="niceness of the simulator process (0: compete)"
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds = 15.0

    db_url, engine, sessionmaker = await fresh_database(ADMIN_DB)
    queue = f"arq:bench:{uuid.uuid4().hex[:6]}"
    metric = f"Ingest bench {uuid.uuid4().hex[:4]}"
    port = free_port("127.0.0.1")
    procs: list[subprocess.Popen[bytes]] = []
    with SimulatorProcess(time_scale=args.time_scale) as sim:
        if args.simulator_nice and sim.proc is not None:
            # The simulator stands in for Klaviyo's servers, which never share the console's CPU:
            # validating a 1,000-event job with the SDK models must not preempt the web processes.
            os.setpriority(os.PRIO_PROCESS, sim.proc.pid, args.simulator_nice)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "ENVIRONMENT": "test",
            "SECRET_KEY": "bench-secret-key-that-is-long-enough-0123456789",
            "DATABASE_URL": db_url,
            "REDIS_URL": REDIS_URL,
            "SANDBOX_URL": sim.base_url,
            "QUEUE_NAME": queue,
            "KLAVIYO_TIME_SCALE": str(args.time_scale),
            "UPLOAD_DIR": tempfile.mkdtemp(prefix="bench-ingest-"),
            "LOG_LEVEL": "WARNING",
        }
        settings = Settings(database_url=db_url, secret_key=env["SECRET_KEY"])  # type: ignore[arg-type]
        source, token, _, _ = await make_source(sessionmaker, settings, event_spec(metric))
        web = [sys.executable, "-m", "uvicorn", "web.app:create_app", "--factory", "--port", str(port)]
        web += [
            "--workers",
            str(args.web_workers),
            "--no-access-log",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
        ]
        web += ["--log-level", "warning"]
        try:
            procs.append(subprocess.Popen(web, cwd=ROOT, env=env))
            procs.append(subprocess.Popen([sys.executable, "-m", "workers"], cwd=ROOT, env=env))
            await _ready(f"http://127.0.0.1:{port}/healthz", queue)
            print(
                f"one event per request at {args.rps:.0f}/s, {args.warmup:g} s warm-up + {args.seconds:g} s "
                f"({args.connections} connections, {args.web_workers} web processes; "
                f"simulator at 1/{args.time_scale:g} of real time)"
            )
            target = ("127.0.0.1", port, f"/api/ingest/{source.id}", token, args.rps)
            # Warm-up (connections opened, caches filled) is sent but not measured; its events count.
            _, _, _, warm_ids, _ = await load(*target, args.warmup, args.connections, first=10_000_000)
            latencies, accepted, refused, ids, sent_for = await load(*target, args.seconds, args.connections)
            ids |= warm_ids
            finished = time.monotonic()
            stored = await _wait_for(sim.base_url, metric, len(ids), timeout=120)
            drain = time.monotonic() - finished
            stats = httpx.get(f"{sim.base_url}/__sim/stats").json()
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
    await engine.dispose()
    await adrop_postgres_database(ADMIN_DB, db_url)
    singles = sum(stats["requests"].get("POST /api/events", {}).values())
    bulks = sum(stats["requests"].get("POST /api/event-bulk-create-jobs", {}).values())
    rps = accepted / sent_for
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    print(
        f"{accepted:,} answered 202 ({refused} otherwise) in {sent_for:.1f} s; latency p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms, max {max(latencies):.1f} ms"
    )
    print(
        f"{len(ids):,} distinct events; {stored:,} in the simulator {drain:.1f} s after the last POST, "
        f"via {singles} single create-event calls and {bulks} bulk jobs"
    )
    print(
        f"rps={rps:.0f} p50_ms={p50:.1f} p99_ms={p99:.1f} drain_s={drain:.1f} "
        f"lost={len(ids) - stored} dup={stats['duplicates']}"
    )


async def _ready(url: str, queue: str) -> None:
    """Until the web app answers and the worker beats (start-up is not measured)."""
    arq = ArqRedis.from_url(REDIS_URL)
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                try:
                    if (await client.get(url)).status_code == 200 and await arq.keys(
                        heartbeat_pattern(queue)
                    ):
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError("the web app or the worker did not start")
    finally:
        await arq.aclose()


async def _wait_for(sim_url: str, metric: str, expected: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            answer = await client.get(f"{sim_url}/__sim/events", params={"metric": metric, "limit": "0"})
            count = int(answer.json()["count"])
            if count >= expected or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main())
