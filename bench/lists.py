"""End-to-end list membership by email: CSV rows -> worker -> profile lookups -> list adds -> simulator.

    python -m bench.lists [--quick] [--rows N] [--unknown SHARE] [--time-scale S]

N email rows whose profiles already exist in the account (seeded before the clock starts) run as one
"add to list" run through a list membership mapping keyed by email. Each batch of 1,000 rows is
resolved to profile ids by ``GET /api/profiles`` with ``any(email,[...])``, 100 per request, then
added in one ``POST /api/lists/{id}/relationships/profiles``. Lookups (75/s, 750/min) bound the rate
at 75,000 rows/min (1,250/s); adds (10/s, 150/min x 1,000) would allow twice that. The simulator
enforces those limits time-scaled by S; figures are scaled back to real terms. The last line is a
key=value summary. ``--unknown`` leaves that share of the emails without a profile: the run creates
them (one profile import job per batch of 1,000 rows, then a second lookup), so with every email
unknown the lookups alone bound the rate at half the ceiling.
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
from models import SyncRun
from simulator.server import SimulatorProcess
from sync.mapping import Email, Target, TargetKind, column
from sync.mapping import Mapping as Spec
from tests.support.databases import adrop_postgres_database

ADMIN_DB = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
SANDBOX_KEY = "pk_sandbox_0000000000000000000000000000"
CEILING = 1_250.0  # profile lookups: 750 requests/min x 100 emails
LOOKUP = "GET /api/profiles"
ADD = "POST /api/lists/{id}/relationships/profiles"
IMPORT_JOB = "POST /api/profile-bulk-import-jobs"
SINGLE_IMPORT = "POST /api/profile-import"


def _api(base_url: str) -> httpx.Client:
    return httpx.Client(
        base_url=base_url,
        timeout=120,
        headers={
            "Authorization": f"Klaviyo-API-Key {SANDBOX_KEY}",
            "revision": "2026-10-15",
            "accept": "application/vnd.api+json",
            "content-type": "application/vnd.api+json",
        },
    )


def seed(base_url: str, emails: list[str]) -> str:
    """A new list, and a profile for every email (bulk import jobs, completed at once); its id."""
    with _api(base_url) as api:
        made = api.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": "bench"}}})
        made.raise_for_status()
        for start in range(0, len(emails), 10_000):
            profiles = [
                {"type": "profile", "attributes": {"email": e}} for e in emails[start : start + 10_000]
            ]
            job = {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": profiles}}}
            api.post("/api/profile-bulk-import-jobs", json={"data": job}).raise_for_status()
        api.post("/__sim/jobs/complete").raise_for_status()
        return str(made.json()["data"]["id"])


def requests_by_endpoint(base_url: str) -> dict[str, int]:
    stats = httpx.get(f"{base_url}/__sim/stats").json()["requests"]
    return {name: sum(by_status.values()) for name, by_status in stats.items()}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--unknown", type=float, default=0.0, help="share of emails with no profile yet")
    parser.add_argument("--time-scale", type=float, default=1.0)
    args = parser.parse_args()
    if args.quick:
        args.rows = 10_000
    tag = uuid.uuid4().hex[:6]
    work = Path(tempfile.mkdtemp(prefix="bench-lists-"))
    emails = [f"member{n}-{tag}@shop.test" for n in range(args.rows)]
    path = work / "members.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Email"])
        writer.writerows([e] for e in emails)

    db_url, engine, sessionmaker = await fresh_database(ADMIN_DB)
    queue = f"arq:bench:{uuid.uuid4().hex[:6]}"
    with SimulatorProcess(time_scale=args.time_scale) as sim:
        t0 = time.monotonic()
        known = emails[: round(args.rows * (1 - args.unknown))]
        list_id = await asyncio.to_thread(seed, sim.base_url, known)
        print(f"seeded {len(known):,} profiles in {time.monotonic() - t0:.1f}s")
        spec = Spec(
            name="bench members by email",
            target=Target(kind=TargetKind.LIST_MEMBERSHIP, list_id=list_id),
            fields=[column("Email", "email", Email())],
        )
        run_ids = await queue_runs(sessionmaker, spec, [path], args.rows, ["Email"])
        before = requests_by_endpoint(sim.base_url)
        timing = await run_on_workers(
            sessionmaker,
            run_ids,
            db_url=db_url,
            sandbox_url=sim.base_url,
            queue=queue,
            time_scale=args.time_scale,
            upload_dir=work,
            workers=1,
        )
        after = requests_by_endpoint(sim.base_url)
        members = next(
            kl["profile_count"]
            for kl in httpx.get(f"{sim.base_url}/__sim/lists").json()["data"]
            if kl["id"] == list_id
        )
        r429 = sum(
            by_status.get("429", 0)
            for by_status in httpx.get(f"{sim.base_url}/__sim/stats").json()["requests"].values()
        )
    async with sessionmaker() as db:
        run = (await db.exec(select(SyncRun).where(col(SyncRun.id).in_(run_ids)))).one()
    await engine.dispose()
    await adrop_postgres_database(ADMIN_DB, db_url)
    lookups = after.get(LOOKUP, 0) - before.get(LOOKUP, 0)
    adds = after.get(ADD, 0) - before.get(ADD, 0)
    jobs = after.get(IMPORT_JOB, 0) - before.get(IMPORT_JOB, 0)
    singles = after.get(SINGLE_IMPORT, 0) - before.get(SINGLE_IMPORT, 0)
    elapsed = timing.elapsed
    rate = members / elapsed / args.time_scale
    # Every unknown email is looked up twice (before and after its import job).
    ceiling = CEILING / (1 + args.unknown)
    print(f"run {run.status.value}: {run.items_sent:,} sent, {run.rows_failed} failed")
    print(
        f"{lookups} profile lookups, {adds} list adds, {jobs} profile import jobs and {singles} single "
        f"creates for {args.rows:,} rows ({args.unknown:.0%} without a profile)"
    )
    print(f"achieved {rate:,.0f} rows/s (real terms) of a {ceiling:,.0f}/s ceiling")
    print(
        f"rows={args.rows} members={members} sent={run.items_sent} failed={run.rows_failed} "
        f"unknown={args.unknown:g} lookups={lookups} adds={adds} import_jobs={jobs} single_creates={singles} "
        f"wall_s={elapsed:.1f} time_scale={args.time_scale:g} "
        f"rate={rate:.0f} ceiling={ceiling:.0f} ratio={rate / ceiling:.3f} r429={r429} "
        f"peak_worker_rss_mb={timing.peak_rss_mb:.0f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
