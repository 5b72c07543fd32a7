"""End-to-end profile import: CSV rows -> worker processes -> bulk import jobs -> simulator.

    python -m bench.profiles [--quick] [--rows N] [--time-scale S] [--runs R]

R uploads of N/R customer rows run at the same time as R profile runs on two worker processes,
sharing the account's limiter. Each run packs profiles into bulk import jobs (10,000 profiles or
5 MB), and waits for every job to finish and report its import errors, so a run is complete only
when Klaviyo (the simulator) has applied every profile. The simulator enforces the real limits
(profile bulk import 10/s burst, 150/min steady; job reads likewise) time-scaled by S; figures are
scaled back to real terms. The last line is a key=value summary.
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
from sqlmodel import col, select

from bench.harness import fresh_database, queue_runs, run_on_workers
from models import SyncBatch, SyncRun
from simulator.server import SimulatorProcess
from sync.mapping import Mapping as Spec
from sync.mapping import Target, TargetKind, column
from tests.support.databases import adrop_postgres_database

ADMIN_DB = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
CEILING = 25_000.0  # bulk profile import: 150 jobs/min x 10,000 profiles = 1.5 M/min
HEADERS = ["Customer ID", "Email", "Phone", "First Name", "Last Name", "City", "Country", "Zip", "Tier"]


def spec() -> Spec:
    return Spec(
        name="bench customers",
        target=Target(kind=TargetKind.PROFILE),
        fields=[
            column("Email", "email"),
            column("Phone", "phone_number"),
            column("Customer ID", "external_id"),
            column("First Name", "first_name"),
            column("Last Name", "last_name"),
            column("City", "location.city"),
            column("Country", "location.country"),
            column("Zip", "location.zip"),
            column("Tier", "properties.Tier"),
        ],
    )


def write_csv(path: Path, start: int, rows: int, tag: str) -> None:
    tiers = ("bronze", "silver", "gold")
    with path.open("w", newline="", buffering=1 << 20) as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADERS)
        for n in range(start, start + rows):
            writer.writerow(
                [
                    f"C{n}",
                    f"customer{n}-{tag}@shop.test",
                    f"+1415{2_000_000 + n % 8_000_000:07d}" if n % 4 == 0 else "",
                    f"First{n % 997}",
                    f"Last{n % 1009}",
                    "Lyon",
                    "France",
                    f"{69000 + n % 10}",
                    tiers[n % 3],
                ]
            )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=2, help="concurrent runs (two worker processes)")
    args = parser.parse_args()
    if args.quick:
        args.rows = 50_000
    tag = uuid.uuid4().hex[:6]
    work = Path(tempfile.mkdtemp(prefix="bench-profiles-"))
    part = args.rows // args.runs
    t0 = time.monotonic()
    files = [work / f"part{i}.csv" for i in range(args.runs)]
    for i, path in enumerate(files):
        write_csv(path, i * part, part, tag)
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    total = part * args.runs
    print(f"generated {total:,} profile rows, {size_mb:,.0f} MB of CSV in {time.monotonic() - t0:.1f}s")

    db_url, engine, sessionmaker = await fresh_database(ADMIN_DB)
    queue = f"arq:bench:{uuid.uuid4().hex[:6]}"
    run_ids = await queue_runs(sessionmaker, spec(), files, part, HEADERS)

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
    async with sessionmaker() as db:
        done = (await db.exec(select(SyncRun).where(col(SyncRun.id).in_(run_ids)))).all()
        sent = sum(run.items_sent for run in done)
        failed = sum(run.rows_failed for run in done)
        jobs = len((await db.exec(select(SyncBatch.id).where(col(SyncBatch.run_id).in_(run_ids)))).all())
    await engine.dispose()
    await adrop_postgres_database(ADMIN_DB, db_url)
    accepted = stats.get("accepted", {})
    stored = int(accepted.get("profiles_created", 0))
    updated = int(accepted.get("profiles_updated", 0))
    by_status = stats["requests"].get("POST /api/profile-bulk-import-jobs", {})
    requests = sum(by_status.values())
    r429 = sum(v.get("429", 0) for v in stats["requests"].values())
    polls = sum(
        sum(v.values()) for k, v in stats["requests"].items() if k.startswith("GET /api/profile-bulk")
    )
    rate = stored / elapsed / args.time_scale
    print(
        f"runs finished after {sorted(round(v, 1) for v in finish.values())} s wall; {jobs} import jobs, "
        f"{requests} job requests, {polls} poll/error reads"
    )
    print(
        f"achieved {rate:,.0f} profiles/s (real terms) of a {CEILING:,.0f}/s ceiling; "
        f"peak worker RSS {peak_rss:.0f} MB"
    )
    print(
        f"rows={total} csv_mb={size_mb:.0f} profiles={stored} updated={updated} sent={sent} failed={failed} "
        f"wall_s={elapsed:.1f} time_scale={args.time_scale:g} rate={rate:.0f} ceiling={CEILING:.0f} "
        f"ratio={rate / CEILING:.3f} r429={r429} lost={total - stored} peak_worker_rss_mb={peak_rss:.0f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
