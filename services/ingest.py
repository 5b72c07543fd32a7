"""Real-time ingest: sources and their tokens, taking posted records into the durable inbox, and
what the source pages show. workers/forward_ingest.py maps and sends the inbox on.

A request is authenticated (bearer token, optional HMAC of the raw body), each record is mapped
once to find its dedup key (the mapping's unique_id, so a repeated order is stored once) and any
mapping error, the rows are inserted and committed, and only then is the forwarder woken.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from arq.connections import ArqRedis
from sqlalchemy import Integer, and_, func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from config.crypto import encrypt_secret
from config.settings import Settings
from models import InboxStatus, IngestRecord, IngestRoute, IngestSource, Mapping, MappingVersion, User
from models.base import utcnow
from sync.mapping import TargetKind
from sync.presets import ECOMMERCE_EVENTS, route_key

log = structlog.get_logger(__name__)

FORWARD_JOB = "forward_ingest"
TOKEN_PREFIX = "kci_"
SIGNATURE_HEADER = "x-signature"
KINDS = (TargetKind.EVENT.value, TargetKind.ORDER.value)
MAX_KEY = 200
SHOWN_ROWS = 50
SPEC_PREFIX = "Ecommerce spec: "


class SourceError(ValueError):
    """A source form that cannot be saved, with the reason for the operator."""


class IngestError(Exception):
    """A request the API refuses: the HTTP status and a message for the store's developer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------- keys and tokens


def hash_token(token: str) -> str:
    """Tokens are 256 random bits, so one SHA-256 is enough to store them safely."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, body: bytes) -> str:
    """The X-Signature value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def wake_key(queue_name: str, source_id: int) -> str:
    """Set before every wake-up; the forwarder holding the source's lock looks here before it stops."""
    return f"{queue_name}:ingest:wake:{source_id}"


def lock_key(queue_name: str, source_id: int) -> str:
    return f"{queue_name}:ingest:lock:{source_id}"


def job_id(queue_name: str, source_id: int) -> str:
    return f"{queue_name}:ingest:{source_id}"


async def wake(arq: ArqRedis, queue_name: str, source_id: int, *, force: bool = False) -> None:
    """Make sure a forwarder runs for the source. The flag covers one already running (arq refuses a
    second job with the same id); the job covers none running. A flag that was already set means a
    forwarder has yet to take it, so the request path skips the job (one round trip, not four);
    the sweep (``force``) always queues it, so a flag left behind by a lost job is picked up."""
    before = await arq.set(wake_key(queue_name, source_id), b"1", ex=24 * 3600, get=True)
    if before is None or force:
        await arq.enqueue_job(
            FORWARD_JOB, source_id, _job_id=job_id(queue_name, source_id), _queue_name=queue_name
        )


# ---------------------------------------------------------------- sources (the pages)


@dataclass
class SourceStats:
    """Where a source's records stand."""

    pending: int = 0
    retrying: int = 0
    failed: int = 0
    unrouted: int = 0  # kept until their event is routed
    last_received_at: Any = None


@dataclass
class SourceRow:
    source: IngestSource
    mapping_name: str | None  # the mapping of records that name no event (None: no such mapping)
    stats: SourceStats
    routes: int = 0


async def mapping_choices(db: AsyncSession) -> list[Mapping]:
    """Live event and order mappings: the ones a source can send through."""
    query = (
        select(Mapping)
        .where(col(Mapping.deleted).is_(False), col(Mapping.target_kind).in_(KINDS))
        .order_by(col(Mapping.name))
    )
    return list((await db.exec(query)).all())


async def create_source(
    db: AsyncSession, settings: Settings, name: str, mapping_id: int, signed: bool, user: User | None
) -> tuple[IngestSource, str, str | None]:
    """A new source; returns it with its token and signing secret, which are never shown again."""
    name = name.strip()
    if not name or len(name) > 120:
        raise SourceError("A source needs a name of at most 120 characters.")
    if (await db.exec(select(IngestSource.id).where(IngestSource.name == name))).first() is not None:
        raise SourceError(f"A source named {name!r} exists already; choose another name.")
    mapping = await db.get(Mapping, mapping_id) if mapping_id else None
    if mapping_id and (mapping is None or mapping.deleted):
        raise SourceError("That mapping no longer exists; choose another one.")
    if mapping is not None and mapping.target_kind not in KINDS:
        raise SourceError(
            f"{mapping.name!r} is a {mapping.target_kind} mapping; ingest sends events and orders only."
        )
    # An ecommerce-spec preset reads one event of the spec: it routes that event, never the others.
    spec_event = spec_event_of(mapping.name) if mapping is not None else None
    token = new_token()
    source = IngestSource(
        name=name,
        mapping_id=None if spec_event else mapping_id or None,
        token_hash=hash_token(token),
        token_hint=token[-4:],
        created_by=user.id if user else None,
    )
    secret = _set_secret(source, settings) if signed else None
    db.add(source)
    await db.flush()
    if spec_event and mapping is not None:
        db.add(
            IngestRoute(
                source_id=source.id or 0,
                event_name=spec_event,
                event_key=route_key(spec_event),
                mapping_id=mapping.id or 0,
            )
        )
        await db.flush()
    return source, token, secret


def spec_event_of(mapping_name: str) -> str | None:
    """The spec event an ecommerce-spec preset mapping reads ("Ecommerce spec: <event> -> ..."), by
    the name the preset gives it; None for any other mapping."""
    if not mapping_name.startswith(SPEC_PREFIX):
        return None
    event = mapping_name.removeprefix(SPEC_PREFIX).partition(" -> ")[0]
    return event if event in ECOMMERCE_EVENTS else None


def _set_secret(source: IngestSource, settings: Settings) -> str:
    secret = "whsec_" + secrets.token_urlsafe(32)
    source.signing_secret_encrypted = encrypt_secret(settings.secret, secret)
    source.updated_at = utcnow()
    return secret


def rotate_token(db: AsyncSession, source: IngestSource) -> str:
    """A new token; the old one stops working at once (a revoked source becomes active again)."""
    token = new_token()
    source.token_hash, source.token_hint = hash_token(token), token[-4:]
    source.revoked_at = None
    source.updated_at = utcnow()
    db.add(source)
    return token


def revoke(db: AsyncSession, source: IngestSource) -> None:
    """Forget the token: every request is refused until a new one is issued. Records already
    received are still forwarded."""
    source.token_hash, source.token_hint = None, None
    source.revoked_at = source.updated_at = utcnow()
    db.add(source)


def new_signing_secret(db: AsyncSession, settings: Settings, source: IngestSource) -> str:
    secret = _set_secret(source, settings)
    db.add(source)
    return secret


def drop_signing_secret(db: AsyncSession, source: IngestSource) -> None:
    source.signing_secret_encrypted = None
    source.updated_at = utcnow()
    db.add(source)


async def retry_failed(db: AsyncSession, source: IngestSource) -> int:
    """Put every failed record of the source back in the queue (through the mapping's current version)."""
    result = await db.exec(
        update(IngestRecord)
        .where(col(IngestRecord.source_id) == source.id, col(IngestRecord.status) == InboxStatus.FAILED)
        .values(
            status=InboxStatus.PENDING,
            attempts=0,
            next_attempt_at=None,
            error_kind=None,
            last_error=None,
        )
    )
    count = int(result.rowcount or 0)
    source.failed_count = max(source.failed_count - count, 0)
    db.add(source)
    return count


async def stats_of(db: AsyncSession, source_ids: list[int]) -> dict[int, SourceStats]:
    """Records waiting, waiting to be retried and failed, per source (from the status index)."""
    stats = {sid: SourceStats() for sid in source_ids}
    if not source_ids:
        return stats
    retrying = func.sum(func.cast(col(IngestRecord.attempts) > 0, Integer))
    query = (
        select(
            col(IngestRecord.source_id),
            col(IngestRecord.status),
            func.count(),
            retrying,
        )
        .where(
            col(IngestRecord.source_id).in_(source_ids),
            col(IngestRecord.status).in_(
                [InboxStatus.PENDING, InboxStatus.SENDING, InboxStatus.FAILED, InboxStatus.UNROUTED]
            ),
        )
        .group_by(col(IngestRecord.source_id), col(IngestRecord.status))
    )
    for sid, status, count, retries in (await db.exec(query)).all():
        entry = stats[sid]
        if status == InboxStatus.FAILED:
            entry.failed += int(count)
        elif status == InboxStatus.UNROUTED:
            entry.unrouted += int(count)
        else:
            entry.pending += int(count)
            entry.retrying += int(retries or 0) if status == InboxStatus.PENDING else 0
    for sid in source_ids:
        # The newest record is the one with the highest id: per status, the tail of the
        # (source, status, id) index, where a max over received_at would read every record.
        newest = [
            (
                await db.exec(
                    select(func.max(col(IngestRecord.id))).where(
                        IngestRecord.source_id == sid, IngestRecord.status == status
                    )
                )
            ).one()
            for status in InboxStatus
        ]
        last_id = max((found for found in newest if found is not None), default=None)
        if last_id is not None:
            stats[sid].last_received_at = (
                await db.exec(select(IngestRecord.received_at).where(IngestRecord.id == last_id))
            ).one()
    return stats


async def list_sources(db: AsyncSession) -> list[SourceRow]:
    query = select(IngestSource, Mapping.name).outerjoin(Mapping).order_by(col(IngestSource.name))
    rows = list((await db.exec(query)).all())
    ids = [source.id for source, _ in rows if source.id is not None]
    stats = await stats_of(db, ids)
    routes: dict[int, int] = {}
    if ids:
        counted = select(col(IngestRoute.source_id), func.count()).group_by(col(IngestRoute.source_id))
        routes = {
            sid: int(n) for sid, n in (await db.exec(counted.where(col(IngestRoute.source_id).in_(ids))))
        }
    return [
        SourceRow(source, name, stats[source.id or 0], routes.get(source.id or 0, 0)) for source, name in rows
    ]


async def get_source(db: AsyncSession, source_id: int) -> SourceRow | None:
    row = (
        await db.exec(
            select(IngestSource, Mapping.name).outerjoin(Mapping).where(IngestSource.id == source_id)
        )
    ).first()
    if row is None:
        return None
    source, name = row
    return SourceRow(source, name, (await stats_of(db, [source_id]))[source_id])


async def problem_records(db: AsyncSession, source_id: int) -> tuple[list[IngestRecord], list[IngestRecord]]:
    """Records waiting for another try after a transient failure, and failed ones (newest first)."""
    base = select(IngestRecord).where(IngestRecord.source_id == source_id)
    retrying = base.where(
        IngestRecord.status == InboxStatus.PENDING, col(IngestRecord.attempts) > 0
    ).order_by(col(IngestRecord.id))
    failed = base.where(IngestRecord.status == InboxStatus.FAILED).order_by(col(IngestRecord.id).desc())
    return (
        list((await db.exec(retrying.limit(SHOWN_ROWS))).all()),
        list((await db.exec(failed.limit(SHOWN_ROWS))).all()),
    )


async def load_source(db: AsyncSession, source_id: int) -> tuple[IngestSource, MappingVersion | None] | None:
    """The source and the current version of its mapping for records that name no event (None when
    it has none, or it was deleted), in one query."""
    query = (
        select(IngestSource, MappingVersion)
        .outerjoin(Mapping, col(Mapping.id) == col(IngestSource.mapping_id))
        .outerjoin(
            MappingVersion,
            and_(
                col(MappingVersion.mapping_id) == col(Mapping.id),
                col(MappingVersion.version) == col(Mapping.current_version),
                col(Mapping.deleted).is_(False),
            ),
        )
        .where(IngestSource.id == source_id)
    )
    row = (await db.exec(query)).first()
    return (row[0], row[1]) if row is not None else None


async def route_versions(db: AsyncSession, source_id: int) -> dict[str, MappingVersion]:
    """The current mapping version of each of the source's routes, by event key (deleted mappings
    left out: their records wait unrouted)."""
    query = (
        select(IngestRoute.event_key, MappingVersion)
        .join(Mapping, col(Mapping.id) == col(IngestRoute.mapping_id))
        .join(
            MappingVersion,
            and_(
                col(MappingVersion.mapping_id) == col(Mapping.id),
                col(MappingVersion.version) == col(Mapping.current_version),
            ),
        )
        .where(IngestRoute.source_id == source_id, col(Mapping.deleted).is_(False))
    )
    return {key: version for key, version in (await db.exec(query)).all()}


def retry_delay(attempts: int, time_scale: float) -> timedelta:
    """How long a record waits after its ``attempts``-th transient failure: 2 s doubling to 5 min."""
    return timedelta(seconds=min(300.0, 2.0 * 2 ** max(attempts - 1, 0)) / time_scale)
