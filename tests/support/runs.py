"""Build uploads and mappings directly in the database, for run tests that do not need the UI."""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from pathlib import Path
from typing import Any

from models import Mapping, MappingVersion, Upload, UploadStatus
from sync.mapping import DateParse, Email, FieldRule, NumberCast, Target, TargetKind, TemplateSource, column
from sync.mapping import Mapping as Spec


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
