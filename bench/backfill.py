"""End-to-end backfill: CSV rows -> worker processes -> simulator at Klaviyo's real bulk-event limits.

    python -m bench.backfill [--quick] [--rows N] [--time-scale S] [--pad BYTES]

Two uploads of N/2 Ordered Product rows each (padded so the full run reads about 1 GB of CSV) run
at the same time as two runs on two worker processes, sharing the account's limiter. The simulator
enforces bulk-event limits (10/s burst, 150/min steady) time-scaled by S; figures are scaled back
to real terms. The last line is a key=value summary.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import func
from sqlmodel import col, select

from bench.harness import fresh_database, queue_runs, run_on_workers
from models import SyncBatch, SyncRun
from simulator.server import SimulatorProcess
from sync.mapping import DateParse, Email, FieldRule, NumberCast, Target, TargetKind, TemplateSource, column
from sync.mapping import Mapping as Spec
from tests.support.databases import adrop_postgres_database

ADMIN_DB = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
CEILING = 2500.0  # bulk events: 150 requests/min x 1,000 events


def spec(metric: str) -> Spec:
    return Spec(
        name="bench ordered product",
        target=Target(kind=TargetKind.EVENT, metric=metric),
        fields=[
            column("Email", "email", Email()),
            column("Created at", "time", DateParse()),
            column("Lineitem price", "value", NumberCast()),
            column("Currency", "value_currency"),
            column("Lineitem sku", "properties.SKU"),
            column("Lineitem name", "properties.ProductName"),
            column("Lineitem quantity", "properties.Quantity", NumberCast()),
            column("Name", "properties.OrderId"),
            FieldRule(source=TemplateSource(template="{Name}_{Lineitem sku}"), target="unique_id"),
        ],
    )


def write_csv(path: Path, start: int, rows: int, pad: int) -> None:
    filler = "x" * pad
    with path.open("w", newline="", buffering=1 << 20) as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "Name",
                "Email",
                "Created at",
                "Currency",
                "Lineitem sku",
                "Lineitem name",
                "Lineitem price",
                "Lineitem quantity",
                "Notes",
            ]
        )
        for n in range(start, start + rows):
            writer.writerow(
                [
                    f"#{n}",
                    f"c{n % 50_000}@shop.test",
                    f"2025-0{1 + n % 9}-1{n % 10}T10:{n % 60:02d}:00Z",
                    "USD",
                    f"SKU-{n % 977}",
                    "Ceramic mug",
                    f"{(n % 90) + 9}.95",
                    1 + n % 3,
                    filler,
                ]
            )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--time-scale", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=2, help="concurrent runs (each on its own worker)")
    parser.add_argument("--pad", type=int, default=900, help="filler bytes per row (about 1 GB for 1M rows)")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.pad = 100_000, 100
    work = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    half = args.rows // args.runs
    t0 = time.monotonic()
    files = [work / f"part{i}.csv" for i in range(args.runs)]
    for i, path in enumerate(files):
        write_csv(path, i * half, half, args.pad)
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    print(f"generated {args.rows:,} rows, {size_mb:,.0f} MB of CSV in {time.monotonic() - t0:.1f}s")

    db_url, engine, sessionmaker = await fresh_database(ADMIN_DB)
    metric = f"Ordered Product {uuid.uuid4().hex[:4]}"
    queue = f"arq:bench:{uuid.uuid4().hex[:6]}"
    run_ids = await queue_runs(sessionmaker, spec(metric), files, half)

    with SimulatorProcess(time_scale=args.time_scale) as sim:
        timing = await run_on_workers(
            sessionmaker,
            run_ids,
            db_url=db_url,
            sandbox_url=sim.base_url,
            queue=queue,
            time_scale=args.time_scale,
            upload_dir=work,
        )
        elapsed, peak_rss, finish = timing.elapsed, timing.peak_rss_mb, timing.finish
        stats = httpx.get(f"{sim.base_url}/__sim/stats").json()
        stored = httpx.get(f"{sim.base_url}/__sim/events", params={"metric": metric, "limit": 1}).json()[
            "count"
        ]
    async with sessionmaker() as db:
        first_batch, last_sent = (
            await db.exec(select(func.min(SyncBatch.created_at), func.max(SyncBatch.sent_at)))
        ).one()
        span = (last_sent - first_batch).total_seconds()
        print(f"first batch cut -> last batch accepted: {span:.1f} s (scaled); wall {elapsed:.1f} s")
        finished = await db.exec(select(SyncRun).where(col(SyncRun.id).in_(run_ids)))
        sent = sum(run.items_sent for run in finished.all())
    await engine.dispose()
    await adrop_postgres_database(ADMIN_DB, db_url)
    by_status = stats["requests"].get("POST /api/event-bulk-create-jobs", {})
    requests = sum(by_status.values())
    r429 = by_status.get("429", 0)
    rate = stored / elapsed / args.time_scale
    fairness = timing.fairness
    print(
        f"runs finished after {sorted(round(v, 1) for v in finish.values())} s (scaled), {requests} requests"
    )
    print(
        f"rows={args.rows} csv_mb={size_mb:.0f} events={stored} rate={rate:.0f} ceiling={CEILING:.0f} "
        f"ratio={rate / CEILING:.3f} r429_share={r429 / max(requests, 1):.4f} lost={args.rows - stored} "
        f"dup={max(sent - stored, 0)} peak_worker_rss_mb={peak_rss:.0f} fairness={fairness:.2f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
