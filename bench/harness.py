"""What the end-to-end benchmarks share: run a set of queued runs on worker processes and time them."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from arq.connections import ArqRedis
from sqlmodel import col, select

from models import Mapping, MappingVersion, RunStatus, SyncRun, Upload, UploadStatus
from services import runs
from services.workers import heartbeat_pattern
from sync.mapping import Mapping as MappingSpec

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")


@dataclass
class Timing:
    """When each run finished (seconds after enqueue) and the workers' peak RSS."""

    finish: dict[int, float]
    peak_rss_mb: float

    @property
    def elapsed(self) -> float:
        return max(self.finish.values())

    @property
    def fairness(self) -> float:
        """Earliest over latest finish: 1.0 when concurrent runs shared the limits evenly."""
        return min(self.finish.values()) / self.elapsed


async def run_on_workers(
    sessionmaker: Any,
    run_ids: list[int],
    *,
    db_url: str,
    sandbox_url: str,
    queue: str,
    time_scale: float,
    upload_dir: Path,
    workers: int = 2,
) -> Timing:
    """Start worker processes, wait until they beat (boot time is not counted), enqueue the runs, and
    poll until every run has finished, sampling the workers' RSS meanwhile."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": db_url,
        "REDIS_URL": REDIS_URL,
        "SANDBOX_URL": sandbox_url,
        "QUEUE_NAME": queue,
        "KLAVIYO_TIME_SCALE": str(time_scale),
        "UPLOAD_DIR": str(upload_dir),
        "LOG_LEVEL": "WARNING",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "workers"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    watched = [psutil.Process(p.pid) for p in procs]
    arq = ArqRedis.from_url(REDIS_URL)
    finish: dict[int, float] = {}
    peak = 0.0
    try:
        while len(await arq.keys(heartbeat_pattern(queue))) < len(procs):
            await asyncio.sleep(0.1)
        started = time.monotonic()
        async with sessionmaker() as db:
            for run_id in run_ids:
                run = await db.get(SyncRun, run_id)
                assert run is not None
                await runs.enqueue(arq, queue, run, "start")
        while len(finish) < len(run_ids):
            peak = max(peak, *(p.memory_info().rss / 1e6 for p in watched))
            async with sessionmaker() as db:
                for run in (await db.exec(select(SyncRun).where(col(SyncRun.id).in_(run_ids)))).all():
                    if run.status.finished and run.id not in finish:
                        finish[run.id or 0] = time.monotonic() - started
                        if run.status != RunStatus.COMPLETED:
                            print(f"run {run.id} ended {run.status}: {run.error_message}")
            await asyncio.sleep(0.25)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        await arq.aclose()
    return Timing(finish, peak)


async def fresh_database(admin_url: str) -> tuple[str, Any, Any]:
    """A new, migrated PostgreSQL database: its URL, engine and session factory."""
    from cli.migrate import migrate
    from models.db import make_engine, make_sessionmaker
    from tests.support.databases import acreate_postgres_database

    db_url = await acreate_postgres_database(admin_url, f"kc_bench_{uuid.uuid4().hex[:8]}")
    await asyncio.to_thread(migrate, db_url)
    engine = make_engine(db_url)
    return db_url, engine, make_sessionmaker(engine)


async def queue_runs(
    sessionmaker: Any,
    spec: MappingSpec,
    files: list[Path],
    rows_per_file: int,
    headers: list[str] | None = None,
) -> list[int]:
    """One mapping, one ready upload per file, and a queued run of each upload through the mapping."""
    run_ids: list[int] = []
    async with sessionmaker() as db:
        mapping = Mapping(name=spec.name, target_kind=spec.target.kind.value)
        db.add(mapping)
        await db.flush()
        db.add(MappingVersion(mapping_id=mapping.id or 0, version=1, spec=spec.model_dump(mode="json")))
        for path in files:
            upload = Upload(
                filename=path.name,
                stored_as=path.name,
                size_bytes=path.stat().st_size,
                sha256=hashlib.sha256(path.name.encode()).hexdigest(),
                status=UploadStatus.READY,
                encoding="utf-8",
                delimiter=",",
                headers=headers or [],
                row_count=rows_per_file,
            )
            db.add(upload)
            await db.flush()
            run = await runs.create_run(
                db,
                upload_id=upload.id or 0,
                mapping_id=mapping.id or 0,
                dry_run=False,
                backfill=True,
                user=None,
            )
            run_ids.append(run.id or 0)
        await db.commit()
    return run_ids
