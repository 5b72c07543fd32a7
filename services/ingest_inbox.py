"""The ingest API's hot path: authenticate a request, map its records, and store them durably.

Each web process keeps one Inbox. It caches a source's credentials and compiled mapping for a
second (a rotated token is re-read at once; a revoked one stops working within that second), and
stores the records of concurrent requests in one transaction (a group commit): while one commit
is in flight the next requests queue, and all of them go in the next. Every request is answered
only after the commit holding its records has returned, so a 202 always means stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from arq.connections import ArqRedis
from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from config.crypto import decrypt_secret
from config.settings import Settings
from models import InboxStatus, IngestRecord, IngestSource, MappingVersion
from models.base import utcnow
from services.ingest import IngestError, hash_token, load_source, sign, wake
from sync.issues import Issue
from sync.mapping import Mapping as MappingSpec
from sync.pipeline import Pipeline
from sync.targets.events import event_attributes

log = structlog.get_logger(__name__)

CREDENTIALS_TTL = 1.0  # seconds a process trusts what it read about a source
MAX_KEY = 200
COMMITS_IN_FLIGHT = 4  # per web process
INBOX = IngestRecord.__table__  # type: ignore[attr-defined]
SOURCES = IngestSource.__table__  # type: ignore[attr-defined]


class PipelineCache:
    """Compiled pipelines by the content of their spec (compiling is what costs; a version id alone
    could name different specs in two databases one process talks to)."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self.items: OrderedDict[bytes, Pipeline] = OrderedDict()

    def get(self, version: MappingVersion) -> Pipeline:
        key = hashlib.sha256(orjson.dumps(version.spec, option=orjson.OPT_SORT_KEYS)).digest()
        pipeline = self.items.get(key)
        if pipeline is None:
            pipeline = self.items[key] = ingest_pipeline(MappingSpec.model_validate(version.spec))
            if len(self.items) > self.size:
                self.items.popitem(last=False)
        else:
            self.items.move_to_end(key)
        return pipeline


def ingest_pipeline(spec: MappingSpec) -> Pipeline:
    """The mapping as ingest runs it: records arrive as they happen, so events are live (not backfill)
    and flows fire."""
    return Pipeline(spec.model_copy(update={"options": spec.options.model_copy(update={"backfill": False})}))


PIPELINES = PipelineCache()


# ---------------------------------------------------------------- checks


def check_token(token_hash: str | None, authorization: str) -> None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise IngestError(401, "Send the source's token as `Authorization: Bearer <token>`.")
    # Compared even for an unknown or revoked source, so timing does not tell which ids exist.
    given = hash_token(token.strip())
    if not hmac.compare_digest(given, token_hash or "0" * 64) or token_hash is None:
        raise IngestError(401, "This token is not valid for this source (wrong, rotated or revoked).")


def check_signature(secret: str, body: bytes, header: str | None) -> None:
    if not header:
        raise IngestError(
            401,
            "This source requires signed requests: send `X-Signature: sha256=<hex HMAC-SHA256 of the body>`.",
        )
    if not hmac.compare_digest(header.strip().lower().encode(), sign(secret, body).encode()):
        raise IngestError(
            401,
            "X-Signature does not match the body: it must be sha256=<hex HMAC-SHA256 of the exact raw "
            "body, keyed with the source's signing secret>.",
        )


def parse_records(body: bytes) -> list[dict[str, Any]]:
    """One JSON object, or an array of objects; anything else is a 400 that says what is wrong."""
    if not body.strip():
        raise IngestError(400, "The body is empty: send a JSON object, or an array of objects.")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngestError(400, f"The body is not valid JSON: {exc}.") from None
    records = document if isinstance(document, list) else [document]
    if not records:
        raise IngestError(400, "The array is empty: send at least one record.")
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            where = f"Item {index} of the array" if isinstance(document, list) else "The body"
            raise IngestError(
                400, f"{where} is a JSON {_json_type(record)}; each record must be a JSON object."
            )
    return records


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array"}
    return names.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- mapping


def _key(raw: str) -> str:
    return raw if len(raw) <= MAX_KEY else "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def body_key(record: dict[str, Any]) -> str:
    """A record the mapping refused has no unique_id: its content identifies it."""
    return "body:" + hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()


def map_records(
    pipeline: Pipeline, records: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Inbox rows for the records (each mapped alone, so an order never spans two records), the
    errors of refused ones for the answer, and how many the mapping skips on purpose."""
    now = utcnow()
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    skipped = 0
    for index, record in enumerate(records):
        errors: list[Issue] = []
        key = None
        skip = False
        for result in pipeline.run([(index + 1, record)]):
            errors.extend(result.errors)
            skip = skip or result.skipped
            if result.items and key is None:
                unique_id = event_attributes(result.items[0]).get("unique_id")
                key = _key(str(unique_id)) if unique_id is not None else None
        if skip and not errors:
            skipped += 1
            continue
        row: dict[str, Any] = {
            "dedup_key": key or body_key(record),
            "body": record,
            "received_at": now,
            "status": InboxStatus.PENDING,
            "error_kind": None,
            "last_error": None,
            "attempts": 0,
        }
        if errors:
            message = "; ".join(f"{e.column or e.rule}: {e.message}" for e in errors)
            row.update(status=InboxStatus.FAILED, error_kind="mapping", last_error=message[:2000])
            details = [{"rule": e.rule, "field": e.column, "message": e.message} for e in errors]
            rejected.append({"index": index, "errors": details})
        rows.append(row)
    return rows, rejected, skipped


# ---------------------------------------------------------------- storing


@dataclass
class _Waiting:
    source_id: int
    rows: list[dict[str, Any]]
    done: asyncio.Future[set[str]]


class GroupCommitter:
    """Stores the rows of concurrent requests in one transaction; returns each request's new keys.

    Up to ``max_drainers`` tasks commit at once, each taking every request waiting when it starts a
    transaction; a task ends when nobody waits, so none outlives the requests (or the loop) it serves.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.insert = pg_insert if engine.dialect.name == "postgresql" else sqlite_insert
        self.statement = (
            self.insert(INBOX)
            .on_conflict_do_nothing(index_elements=["source_id", "dedup_key"])
            .returning(INBOX.c.source_id, INBOX.c.dedup_key)
        )
        self.waiting: list[_Waiting] = []
        self.drainers: set[asyncio.Task[None]] = set()
        # A commit mostly waits for the disk: a few on their own connections overlap those waits.
        # SQLite has one writer, so one is all it can use.
        self.max_drainers = COMMITS_IN_FLIGHT if engine.dialect.name == "postgresql" else 1

    async def store(self, source_id: int, rows: list[dict[str, Any]]) -> set[str]:
        done: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self.waiting.append(_Waiting(source_id, rows, done))
        if len(self.drainers) < self.max_drainers:
            task = asyncio.create_task(self._drain())
            self.drainers.add(task)
            task.add_done_callback(self.drainers.discard)
        return await done

    async def _drain(self) -> None:
        # Under load a task keeps its connection for group after group: no pool checkout between.
        try:
            # Returning the connection awaits, and requests may queue meanwhile: look again after.
            while self.waiting:
                await self._drain_on_connection()
        except BaseException as exc:
            # No connection (or it broke, or we were cancelled): nobody still waiting may hang.
            failed = exc if isinstance(exc, Exception) else RuntimeError("the ingest commit was cancelled")
            waiting, self.waiting = self.waiting, []
            for entry in waiting:
                if not entry.done.done():
                    entry.done.set_exception(failed)
            if not isinstance(exc, Exception):
                raise

    async def _drain_on_connection(self) -> None:
        async with self.engine.connect() as conn:
            while self.waiting:
                group, self.waiting = self.waiting, []
                try:
                    stored = await self._commit(conn, group)
                except Exception as exc:
                    for entry in group:
                        if not entry.done.done():
                            entry.done.set_exception(exc)
                    if conn.invalidated:
                        raise
                    continue
                for entry, keys in zip(group, stored, strict=True):
                    if not entry.done.done():
                        entry.done.set_result(keys)

    async def _commit(self, conn: AsyncConnection, group: list[_Waiting]) -> list[set[str]]:
        owner: dict[tuple[int, str], int] = {}
        params: list[dict[str, Any]] = []
        for index, entry in enumerate(group):
            for row in entry.rows:
                key = (entry.source_id, row["dedup_key"])
                if key not in owner:  # a repeat within the group is a duplicate of the first
                    owner[key] = index
                    params.append({**row, "source_id": entry.source_id})
        stored: list[set[str]] = [set() for _ in group]
        async with conn.begin():
            if params:
                for source_id, dedup_key in (await conn.execute(self.statement, params)).all():
                    stored[owner[(source_id, dedup_key)]].add(dedup_key)
            counts: dict[int, tuple[int, int]] = {}
            for entry, keys in zip(group, stored, strict=True):
                duplicates = len(entry.rows) - len(keys)
                refused = sum(
                    1
                    for row in entry.rows
                    if row["status"] == InboxStatus.FAILED and row["dedup_key"] in keys
                )
                if duplicates or refused:
                    before = counts.get(entry.source_id, (0, 0))
                    counts[entry.source_id] = (before[0] + duplicates, before[1] + refused)
            # Only then: the usual group never touches the sources table, so requests never queue on
            # a source's row lock.
            for source_id, (duplicates, refused) in counts.items():
                await conn.execute(
                    update(SOURCES)
                    .where(SOURCES.c.id == source_id)
                    .values(
                        duplicate_count=SOURCES.c.duplicate_count + duplicates,
                        failed_count=SOURCES.c.failed_count + refused,
                    )
                )
        return stored


# ---------------------------------------------------------------- the inbox


@dataclass
class Credentials:
    """What a request is checked against: read from the database at most once a second."""

    token_hash: str | None
    secret: str | None
    pipeline: Pipeline | None  # None: the mapping was deleted
    read_at: float


@dataclass
class Accepted:
    """The 202 answer: how many records were stored, repeats dropped, and records the mapping refused."""

    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    skipped: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "rejected": len(self.rejected),
            "errors": self.rejected,
        }


class Inbox:
    """One per web process: cached credentials, the group committer, and waking the forwarder."""

    def __init__(
        self,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        arq: ArqRedis | None = None,
    ) -> None:
        self.engine = engine
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.arq = arq
        self.committer = GroupCommitter(engine)
        self.credentials: dict[int, Credentials] = {}
        self.waking: dict[int, asyncio.Task[None]] = {}
        self.wake_again: set[int] = set()
        self.loop = asyncio.get_running_loop()

    async def _credentials(self, source_id: int, fresh: bool = False) -> Credentials:
        cached = self.credentials.get(source_id)
        if cached is not None and not fresh and time.monotonic() - cached.read_at < CREDENTIALS_TTL:
            return cached
        async with self.sessionmaker() as db:
            loaded = await load_source(db, source_id)
        if loaded is None:
            found = Credentials(None, None, None, time.monotonic())
        else:
            source, version = loaded
            secret = None
            if source.signing_secret_encrypted:
                secret = decrypt_secret(self.settings.secret, source.signing_secret_encrypted)
            found = Credentials(
                source.token_hash if source.active else None,
                secret,
                PIPELINES.get(version) if version is not None else None,
                time.monotonic(),
            )
        self.credentials[source_id] = found
        return found

    def forget(self, source_id: int) -> None:
        """This process changed the source (rotate, revoke, signing): read it again next time."""
        self.credentials.pop(source_id, None)

    async def accept(
        self, source_id: int, authorization: str, signature: str | None, body: bytes
    ) -> Accepted:
        """Authenticate, map and store one request's records: when this returns they are committed."""
        creds = await self._credentials(source_id)
        try:
            check_token(creds.token_hash, authorization)
        except IngestError:
            # A token rotated since we last looked is honoured at once; only then is the 401 final.
            creds = await self._credentials(source_id, fresh=True)
            check_token(creds.token_hash, authorization)
        if creds.secret is not None:
            check_signature(creds.secret, body, signature)
        records = parse_records(body)
        if creds.pipeline is None:
            raise IngestError(409, "The source's mapping was deleted; choose another mapping in the console.")
        rows, rejected, skipped = map_records(creds.pipeline, records)
        stored = await self.committer.store(source_id, rows) if rows else set()
        answer = Accepted(received=len(records), skipped=skipped, rejected=rejected)
        pending = {row["dedup_key"] for row in rows if row["status"] == InboxStatus.PENDING}
        answer.accepted = len(pending & stored)
        answer.duplicates = len(rows) - len(stored)
        if answer.accepted:
            self._wake_soon(source_id)
        return answer

    def _wake_soon(self, source_id: int) -> None:
        """Wake the source's forwarder after this commit, without holding up the answer. Wake-ups of
        one source are coalesced: one asked for while another is on its way makes it go once more."""
        if self.arq is None:
            return
        if source_id in self.waking:
            self.wake_again.add(source_id)
            return
        self.waking[source_id] = asyncio.create_task(self._waker(source_id))

    async def _waker(self, source_id: int) -> None:
        assert self.arq is not None
        try:
            while True:
                self.wake_again.discard(source_id)
                try:
                    await wake(self.arq, self.settings.queue_name, source_id)
                except Exception as exc:  # redis-py's errors: Redis away
                    # The records are stored; the worker's sweep forwards them once Redis is back.
                    log.warning("ingest could not wake the forwarder", source_id=source_id, error=str(exc))
                if source_id not in self.wake_again:
                    break
        finally:
            self.waking.pop(source_id, None)


def inbox_for(state: Any) -> Inbox:
    """The web process's Inbox, made on first use for the app's current engine and event loop."""
    inbox: Inbox | None = getattr(state, "ingest_inbox", None)
    if inbox is None or inbox.engine is not state.engine or inbox.loop is not asyncio.get_running_loop():
        inbox = Inbox(state.engine, state.sessionmaker, state.settings, state.arq)
        state.ingest_inbox = inbox
    return inbox
