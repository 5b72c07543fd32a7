"""Build uploads and mappings directly in the database, for run tests that do not need the UI."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from arq.connections import ArqRedis

from config.settings import Settings
from models import Mapping, MappingVersion, SyncRun, Upload, UploadStatus
from services import runs
from sync.mapping import DateParse, Email, FieldRule, NumberCast, Target, TargetKind, TemplateSource, column
from sync.mapping import Mapping as Spec
from tests.support.env import REDIS_URL, ROOT


def ordered_product_spec(metric: str = "Ordered Product", *, with_price: bool = True) -> Spec:
    """email, order, sku, price, time -> one event per row with unique_id <order>_<sku>."""
    price = [column("price", "value", NumberCast())] if with_price else []
    return Spec(
        name=f"test {metric}",
        target=Target(kind=TargetKind.EVENT, metric=metric),
        fields=[
            column("email", "email", Email()),
            column("time", "time", DateParse()),
            *price,
            column("sku", "properties.SKU"),
            column("order", "properties.OrderId"),
            FieldRule(source=TemplateSource(template="{order}_{sku}"), target="unique_id"),
        ],
    )


def csv_text(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


async def make_upload(sessionmaker: Any, upload_dir: Path, text: str, filename: str = "orders.csv") -> Upload:
    """An analysed, ready upload whose file sits in upload_dir."""
    stored = f"{uuid.uuid4().hex}.upload"
    Path(upload_dir).mkdir(parents=True, exist_ok=True)
    data = text.encode()
    (Path(upload_dir) / stored).write_bytes(data)
    rows = max(text.count("\n") - 1, 0)
    async with sessionmaker() as db:
        upload = Upload(
            filename=filename,
            stored_as=stored,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            status=UploadStatus.READY,
            encoding="utf-8",
            delimiter=",",
            headers=text.splitlines()[0].split(","),
            row_count=rows,
        )
        db.add(upload)
        await db.commit()
        return upload


async def make_mapping(sessionmaker: Any, spec: Spec) -> Mapping:
    async with sessionmaker() as db:
        mapping = Mapping(name=spec.name, target_kind=spec.target.kind.value)
        db.add(mapping)
        await db.flush()
        assert mapping.id is not None
        db.add(MappingVersion(mapping_id=mapping.id, version=1, spec=spec.model_dump(mode="json")))
        await db.commit()
        return mapping


async def add_version(sessionmaker: Any, mapping_id: int, spec: Spec) -> None:
    async with sessionmaker() as db:
        mapping = await db.get(Mapping, mapping_id)
        mapping.current_version += 1
        db.add(
            MappingVersion(
                mapping_id=mapping_id, version=mapping.current_version, spec=spec.model_dump(mode="json")
            )
        )
        db.add(mapping)
        await db.commit()


def order_rows(n: int, prefix: str = "r", start: int = 0) -> list[dict[str, str]]:
    """n good rows for ordered_product_spec, with distinct orders (so distinct unique_ids)."""
    return [
        {
            "email": f"{prefix}{i}@shop.test",
            "order": str(start + i),
            "sku": "S",
            "price": "2",
            "time": "2025-01-01T00:00:00Z",
        }
        for i in range(n)
    ]


def sim_settings(settings: Settings, simulator_url: str, upload_dir: Path, **overrides: Any) -> Settings:
    """The test settings pointed at a simulator that runs 20x faster than Klaviyo."""
    return settings.model_copy(
        update={
            "sandbox_url": simulator_url,
            "klaviyo_time_scale": 20.0,
            "upload_dir": upload_dir,
            **overrides,
        }
    )


async def start_run(
    sessionmaker: Any,
    settings: Settings,
    upload: Upload,
    mapping: Mapping,
    *,
    dry_run: bool = False,
    backfill: bool = True,
) -> SyncRun:
    """Create a queued run and enqueue its job, as the Runs page does."""
    assert upload.id is not None and mapping.id is not None
    async with sessionmaker() as db:
        run = await runs.create_run(
            db, upload_id=upload.id, mapping_id=mapping.id, dry_run=dry_run, backfill=backfill, user=None
        )
        await db.commit()
    arq = ArqRedis.from_url(settings.redis_url)
    try:
        await runs.enqueue(arq, settings.queue_name, run, "start")
    finally:
        await arq.aclose()
    return run


def worker_env(
    database_url: str, simulator_url: str, queue: str, upload_dir: Path, **extra: str
) -> dict[str, str]:
    """Environment for a `python -m workers` process in a test (fast leases, scaled limiter)."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "SANDBOX_URL": simulator_url,
        "QUEUE_NAME": queue,
        "KLAVIYO_TIME_SCALE": "20",
        "RUN_LEASE_SECONDS": "2",
        "UPLOAD_DIR": str(upload_dir),
        **extra,
    }


def spawn_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "workers"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    """Poll an async predicate until it is true, or fail saying what never happened."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def run_to_end(
    sessionmaker: Any, run_worker_burst: Any, settings: Any, upload: Any, mapping: Any, **options: Any
) -> SyncRun:
    """Start a run with these create_run options, and work the queue until it ends."""
    options.setdefault("dry_run", False)
    async with sessionmaker() as db:
        run = await runs.create_run(
            db, upload_id=upload.id, mapping_id=mapping.id, backfill=True, user=None, **options
        )
        await db.commit()
    arq = ArqRedis.from_url(settings.redis_url)
    await runs.enqueue(arq, settings.queue_name, run, "start")
    await arq.aclose()
    await run_worker_burst(settings)
    async with sessionmaker() as db:
        done: SyncRun | None = await db.get(SyncRun, run.id)
    assert done is not None
    return done
