"""Page latency at scale: the runs list, a run page and the Overview over a big database.

    python -m bench.pages [--quick] [--runs N] [--batches N] [--errors N] [--requests N]

Creates a fresh PostgreSQL database (on the server of TEST_DATABASE_URL, default
postgresql+asyncpg://postgres@127.0.0.1:5432/test), migrates it, fills it with COPY
(default 1,000,000 runs, 100,000 batches all sent in the last 24 hours, 1,000,000 row errors of
which half belong to one big run; --quick: 100,000 / 10,000 / 100,000), runs VACUUM ANALYZE, then
times each page through the real app (Litestar's AsyncTestClient, real Redis) and prints p50/p95
of the warm views and the slowest first (cold) view of each page.
The database is dropped at the end. The last line is a key=value summary.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from litestar.testing import AsyncTestClient
from sqlalchemy.engine import make_url

from config.settings import Environment, Settings
from models import Role
from models.db import make_engine, make_sessionmaker
from tests.support.databases import acreate_postgres_database, adrop_postgres_database
from tests.support.web import login, make_user
from web.app import create_app

ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
RULES = ["invalid_email", "missing_time", "bad_number", "klaviyo_rejected", "too_long", "bad_currency"]


def _jsonb(text: str) -> bytes:
    return b"\x01" + text.encode()  # jsonb's binary form: a version byte, then the JSON text


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _columns(conn: asyncpg.Connection, table: str) -> list[tuple[str, str, bool]]:
    rows = await conn.fetch(
        "SELECT column_name, data_type, is_nullable = 'YES' AS nullable FROM information_schema.columns "
        "WHERE table_name = $1 ORDER BY ordinal_position",
        table,
    )
    return [(r["column_name"], r["data_type"], r["nullable"]) for r in rows]


def _default(data_type: str, nullable: bool, now: datetime) -> Any:
    if nullable:
        return None
    if data_type in ("integer", "bigint", "smallint"):
        return 0
    if data_type in ("double precision", "real", "numeric"):
        return 0.0
    if data_type == "boolean":
        return False
    if data_type == "jsonb" or data_type == "json":
        return "{}"
    if data_type.startswith("timestamp"):
        return now
    return ""


async def _copy(conn: asyncpg.Connection, table: str, count: int, make: Any, chunk: int = 100_000) -> float:
    """COPY ``count`` rows built by ``make(i) -> dict`` into ``table`` (other columns get defaults)."""
    columns = await _columns(conn, table)
    now = datetime.now(UTC)
    names = [c for c, _, _ in columns if c != "id"]
    defaults = {c: _default(t, n, now) for c, t, n in columns}
    started = time.monotonic()
    for start in range(0, count, chunk):
        records = []
        for i in range(start, min(start + chunk, count)):
            values = make(i)
            records.append(tuple(values.get(c, defaults[c]) for c in names))
        await conn.copy_records_to_table(table, records=records, columns=names)
    return time.monotonic() - started


async def fill(url: str, runs: int, batches: int, errors: int, requests: int) -> dict[str, int]:
    conn = await asyncpg.connect(_dsn(url))
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb, decoder=lambda b: b[1:].decode(), schema="pg_catalog", format="binary"
    )
    rng = random.Random(7)
    now = datetime.now(UTC)
    kinds = ["event", "order", "profile", "catalog_item"]
    statuses = ["completed"] * 8 + ["failed", "cancelled"]
    sources = ["upload"] * 9 + ["retry"]
    try:
        took = await _copy(
            conn,
            "sync_runs",
            runs,
            lambda i: {
                "kind": kinds[i % 4],
                "source": sources[i % 10],
                "status": statuses[i % 10] if i < runs - 5 else "running",
                "total_rows": 10_000,
                "rows_read": 10_000 if i < runs - 5 else 4_000,
                "rows_ok": 9_900,
                "rows_failed": 100,
                "items_sent": 9_900,
                "requests": 10,
                "options": '{"backfill": true}',
                "created_at": now - timedelta(seconds=(runs - i) * 30),
                "started_at": now - timedelta(seconds=(runs - i) * 30),
                "updated_at": now,
            },
        )
        print(f"sync_runs: {runs:,} rows in {took:.1f} s")
        # Batches: the newest 100 runs share them; all were sent within the last 24 hours.
        big = runs - 10  # the run page timed: most batches and half the errors
        per_run = max(batches // 100, 1)

        def batch(i: int) -> dict[str, Any]:
            run = big if i < batches // 2 else runs - 100 + (i % 100) + 1
            seq = i if i < batches // 2 else batches + i
            status = 429 if i % 97 == 0 else (400 if i % 89 == 0 else 202)
            return {
                "run_id": run,
                "seq": seq,
                "status": "sent",
                "first_ordinal": seq * 1000,
                "last_ordinal": seq * 1000 + 999,
                "first_row": seq * 1000 + 1,
                "last_row": seq * 1000 + 1000,
                "item_count": 1000,
                "body_bytes": 380_000,
                "accepted": 1000 if status == 202 else 990,
                "rejected": 0 if status == 202 else 10,
                "attempts": 2 if status == 429 else 1,
                "http_status": 202 if status == 429 else status,
                "http_429": 1 if status == 429 else 0,
                "job_id": f"job-{uuid.UUID(int=rng.getrandbits(128)).hex[:20]}",
                "duration_ms": 200 + i % 300,
                "created_at": now - timedelta(seconds=(batches - i) * 86_000 / batches),
                "sent_at": now - timedelta(seconds=(batches - i) * 86_000 / batches),
            }

        took = await _copy(conn, "sync_batches", batches, batch)
        print(f"sync_batches: {batches:,} rows in {took:.1f} s ({per_run} per run on average)")

        def error(i: int) -> dict[str, Any]:
            run = big if i < errors // 2 else runs - 1000 + (i % 1000) + 1
            rule = RULES[(i * 7) % len(RULES)]
            return {
                "run_id": run,
                "row_number": i + 2,
                "severity": "error" if i % 11 else "warning",
                "stage": "klaviyo" if rule == "klaviyo_rejected" else "mapping",
                "column": "email",
                "rule": rule,
                "message": f"Row {i + 2}: {rule.replace('_', ' ')}",
                "values": '{"email": "nobody-at-all", "order": "1001"}',
                "created_at": now,
            }

        took = await _copy(conn, "row_errors", errors, error)
        print(f"row_errors: {errors:,} rows in {took:.1f} s")
        body = '{"data": {"type": "event-bulk-create-job", "attributes": {}}}' * 60
        took = await _copy(
            conn,
            "request_samples",
            requests,
            lambda i: {
                "run_id": big,
                "at": now,
                "method": "POST",
                "url": "https://a.klaviyo.com/api/event-bulk-create-jobs",
                "status": 400 if i % 5 == 0 else 202,
                "duration_ms": 180,
                "request_headers": '{"authorization": "Klaviyo-API-Key [redacted]"}',
                "request_body": body,
                "request_bytes": 380_000,
                "response_headers": "{}",
                "response_body": '{"errors": []}',
                "response_bytes": 14,
            },
        )
        print(f"request_samples: {requests:,} rows in {took:.1f} s")
        started = time.monotonic()
        await conn.execute("VACUUM ANALYZE")
        print(f"VACUUM ANALYZE in {time.monotonic() - started:.1f} s")
        return {"big_run": big, "runs": runs}
    finally:
        await conn.close()


async def time_pages(url: str, big_run: int, rounds: int) -> dict[str, list[float]]:
    settings = Settings(
        environment=Environment.TEST,
        database_url=url,
        redis_url=REDIS_URL,
        queue_name=f"arq:bench:{uuid.uuid4().hex[:6]}",
        login_max_failures=10_000,
    )
    engine = make_engine(url)
    user = await make_user(make_sessionmaker(engine), f"bench{uuid.uuid4().hex[:6]}", Role.ADMIN)
    await engine.dispose()
    pages = {
        "runs_list": [
            "/runs/",
            "/runs/?kind=order",
            "/runs/?status=failed&source=retry",
            "/runs/?before=500000",
        ],
        "run_page": [f"/runs/{big_run}", f"/runs/{big_run}/batches?before=40000"],
        "overview": ["/", "/overview/status", "/overview/traffic"],
        "metrics": ["/metrics"],  # not a page; scraped every 15-60 s, so timed for information
    }
    timings: dict[str, list[float]] = {name: [] for name in pages}
    cold: dict[str, float] = {}
    async with AsyncTestClient(create_app(settings)) as client:
        assert (await login(client, user.username)).status_code == 302
        for name, urls in pages.items():
            for path in urls:  # warm up (connections, template compilation, caches)
                started = time.perf_counter()
                response = await client.get(path)
                cold[name] = max(cold.get(name, 0.0), (time.perf_counter() - started) * 1000)
                assert response.status_code == 200, (path, response.status_code, response.text[:300])
            for i in range(rounds):
                path = urls[i % len(urls)]
                started = time.perf_counter()
                response = await client.get(path)
                timings[name].append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, path
    for name, ms in cold.items():
        # First views fill the per-process caches (closed minutes of the chart, a run's error groups).
        print(f"{name:10s} first (cold) view: {ms:.1f} ms")
    return timings


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int)
    parser.add_argument("--batches", type=int)
    parser.add_argument("--errors", type=int)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    runs = args.runs or 1_000_000 // scale
    batches = args.batches or 100_000 // scale
    errors = args.errors or 1_000_000 // scale
    rounds = args.rounds or (40 if args.quick else 100)
    url = await acreate_postgres_database(ADMIN_URL, f"kc_bench_pages_{uuid.uuid4().hex[:8]}")
    try:
        from cli.migrate import migrate

        assert await asyncio.to_thread(migrate, url) == 0
        info = await fill(url, runs, batches, errors, args.requests)
        timings = await time_pages(url, info["big_run"], rounds)
    finally:
        if args.keep:
            print(f"kept {url}")
        else:
            await adrop_postgres_database(ADMIN_URL, url)
    summary = []
    for name, values in timings.items():
        p50, p95 = pct(values, 50), pct(values, 95)
        print(
            f"{name:10s} n={len(values)} p50={p50:.1f} ms p95={p95:.1f} ms max={max(values):.1f} ms "
            f"mean={statistics.fmean(values):.1f} ms"
        )
        summary.append(f"{name}_p50_ms={p50:.0f} {name}_p95_ms={p95:.0f}")
    print(f"runs={runs} batches={batches} row_errors={errors} " + " ".join(summary))


if __name__ == "__main__":
    asyncio.run(main())
