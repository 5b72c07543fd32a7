"""Incremental catalog sync end to end: a first sync of N items, then a second with 1% changed.

    python -m bench.catalog [--quick] [--items N] [--time-scale S] [--changed F]

Both syncs run the same catalog-item mapping on two worker processes against the simulator, which
enforces Klaviyo's catalog limits (jobs of 100 items, 75/s burst and 750/min steady for writes and
for job reads, 500 jobs in flight) time-scaled by S. Every job is polled until it settles, so a run
is complete only when the simulator has applied every item. The second sync should send only the
changed items. Rates are scaled back to real terms; the last line is a key=value summary.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import tempfile
import uuid
from pathlib import Path

import httpx
from sqlmodel import col, select

from bench.harness import fresh_database, queue_runs, run_on_workers
from models import CatalogState, SyncRun
from simulator.server import SimulatorProcess
from sync.mapping import Mapping as Spec
from sync.mapping import Target, TargetKind, column
from tests.support.databases import adrop_postgres_database

ADMIN_DB = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
CEILING = 1_250.0  # catalog item jobs: 750/min x 100 items = 75,000 items/min
HEADERS = ["Id", "Title", "Description", "URL", "Price", "Image"]


def spec() -> Spec:
    return Spec(
        name="bench catalog",
        target=Target(kind=TargetKind.CATALOG_ITEM),
        fields=[
            column("Id", "external_id"),
            column("Title", "title"),
            column("Description", "description"),
            column("URL", "url"),
            column("Price", "price"),
            column("Image", "image_full_url"),
        ],
    )


def write_csv(path: Path, items: int, tag: str, changed_every: int | None = None) -> int:
    """The catalog; with ``changed_every``, every n-th item has a new price. Returns how many changed."""
    changed = 0
    with path.open("w", newline="", buffering=1 << 20) as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADERS)
        for n in range(items):
            price = 10 + n % 90 + 0.5
            if changed_every and n % changed_every == 0:
                price += 1
                changed += 1
            writer.writerow(
                [f"{tag}-{n}", f"Product {n}", f"Stoneware piece number {n}, glazed by hand",
                 f"https://shop.test/p/{n}", f"{price:.2f}", f"https://cdn.shop.test/p/{n}.jpg"]
            )  # fmt: skip
    return changed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--changed", type=float, default=0.01, help="share of items changed for sync 2")
    args = parser.parse_args()
    if args.quick:
        args.items, args.time_scale = 6_000, 10.0
    tag = uuid.uuid4().hex[:6]
    work = Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    first_csv, second_csv = work / "catalog1.csv", work / "catalog2.csv"
    write_csv(first_csv, args.items, tag)
    changed = write_csv(second_csv, args.items, tag, changed_every=round(1 / args.changed))

    db_url, engine, sessionmaker = await fresh_database(ADMIN_DB)
    queue = f"arq:bench:{uuid.uuid4().hex[:6]}"
    walls: list[float] = []
    with SimulatorProcess(time_scale=args.time_scale) as sim:
        for path in (first_csv, second_csv):
            (run_id,) = await queue_runs(sessionmaker, spec(), [path], args.items, HEADERS)
            timing = await run_on_workers(
                sessionmaker,
                [run_id],
                db_url=db_url,
                sandbox_url=sim.base_url,
                queue=queue,
                time_scale=args.time_scale,
                upload_dir=work,
            )
            walls.append(timing.elapsed)
        stats = httpx.get(f"{sim.base_url}/__sim/stats").json()
        stored = len(httpx.get(f"{sim.base_url}/__sim/catalog").json()["items"])
    async with sessionmaker() as db:
        first, second = (await db.exec(select(SyncRun).order_by(col(SyncRun.id)))).all()
        state = len((await db.exec(select(CatalogState.id))).all())
    await engine.dispose()
    await adrop_postgres_database(ADMIN_DB, db_url)

    rate = first.items_sent / walls[0] / args.time_scale
    second_rate = args.items / walls[1] / args.time_scale  # items examined per second
    r429 = sum(v.get("429", 0) for v in stats["requests"].values())
    peak = stats.get("peak_catalog_jobs_in_flight", 0)
    print(
        f"first sync: {first.items_sent:,} items in {walls[0]:.1f}s wall, {first.requests} requests; "
        f"{rate:,.0f} items/s (real terms) of a {CEILING:,.0f}/s ceiling"
    )
    print(
        f"second sync ({changed:,} changed): sent {second.items_sent:,} in {walls[1]:.1f}s wall, "
        f"{second.requests} requests; state rows {state:,}, simulator holds {stored:,}"
    )
    print(
        f"items={args.items} time_scale={args.time_scale:g} first_wall_s={walls[0]:.1f} rate={rate:.0f} "
        f"ceiling={CEILING:.0f} ratio={rate / CEILING:.3f} jobs_in_flight_peak={peak} "
        f"second_changed={changed} second_sent={second.items_sent} second_wall_s={walls[1]:.1f} "
        f"second_items_per_s={second_rate:.0f} stored={stored} "
        f"failed={first.rows_failed + second.rows_failed} r429={r429}"
    )


if __name__ == "__main__":
    asyncio.run(main())
