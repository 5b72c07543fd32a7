"""Ingest sources and the records a store posts, built directly for API and forwarder tests."""

from __future__ import annotations

from typing import Any

from config.settings import Settings
from models import IngestSource, Mapping
from services import ingest
from sync.mapping import (
    DateParse,
    Email,
    FieldRule,
    MappingOptions,
    NumberCast,
    PathSource,
    Target,
    TargetKind,
    column,
)
from sync.mapping import Mapping as Spec
from tests.support.env import unique
from tests.support.runs import make_mapping


def event_spec(metric: str) -> Spec:
    """{"id", "email", "total", "time"} -> one event whose unique_id is the record's id."""
    return Spec(
        name=f"ingest {metric}",
        target=Target(kind=TargetKind.EVENT, metric=metric),
        fields=[
            column("email", "email", Email(), required=True),
            column("id", "unique_id", required=True),
            column("total", "value", NumberCast()),
            column("time", "time", DateParse()),
            column("channel", "properties.Channel"),
        ],
    )


def order_spec(name: str) -> Spec:
    """A store's order object with its lines under "lines" -> Placed Order + one Ordered Product per line."""

    def path(source: str, target: str, *transforms: Any) -> FieldRule:
        return FieldRule(source=PathSource(path=source), target=target, transforms=list(transforms))

    return Spec(
        name=name,
        target=Target(kind=TargetKind.ORDER),
        options=MappingOptions(line_items_path="lines"),
        fields=[
            path("order_id", "properties.OrderId"),
            path("email", "email", Email()),
            path("placed_at", "time", DateParse()),
            path("line.sku", "item.SKU"),
            path("line.price", "item.ItemPrice", NumberCast()),
        ],
    )


def event_record(n: int, prefix: str = "e") -> dict[str, Any]:
    return {
        "id": f"{prefix}-{n}",
        "email": f"buyer{n % 500}@shop.test",
        "total": n % 100 + 0.5,
        "time": "2026-11-30T10:00:00Z",
        "channel": "web",
    }


def order_record(order_id: str, email: str = "ann@shop.test") -> dict[str, Any]:
    return {
        "order_id": order_id,
        "email": email,
        "placed_at": "2026-11-30T10:00:00Z",
        "lines": [{"sku": "MUG", "price": "12.50"}, {"sku": "TEA", "price": "4"}],
    }


async def make_source(
    sessionmaker: Any, settings: Settings, spec: Spec, *, signed: bool = False
) -> tuple[IngestSource, str, str | None, Mapping]:
    """A mapping and a source over it; returns the source, its token and signing secret, and the mapping."""
    mapping = await make_mapping(sessionmaker, spec)
    async with sessionmaker() as db:
        source, token, secret = await ingest.create_source(
            db, settings, unique("source "), mapping.id or 0, signed, None
        )
        await db.commit()
    return source, token, secret, mapping


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "content-type": "application/json"}


async def drop_unsent_records(sessionmaker: Any) -> None:
    """Delete inbox records no worker sent: a test that posts without forwarding must not leave them
    in the session's database, where a later test's worker (its sweep wakes every source) would
    forward them to that test's own simulator."""
    from sqlmodel import col, delete

    from models import InboxStatus, IngestRecord

    async with sessionmaker() as db:
        await db.exec(
            delete(IngestRecord).where(
                col(IngestRecord.status).in_([InboxStatus.PENDING, InboxStatus.SENDING])
            )
        )
        await db.commit()
