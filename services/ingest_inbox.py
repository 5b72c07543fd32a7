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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
import structlog
from arq.connections import ArqRedis
from sqlalchemy import update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from config.crypto import decrypt_secret
from config.settings import Settings
from models import InboxStatus, IngestRecord, IngestSource, MappingVersion
from models.base import utcnow
from services.ingest import IngestError, hash_token, load_source, route_versions, sign, wake
from sync.issues import Issue
from sync.mapping import Mapping as MappingSpec
from sync.pipeline import Pipeline
from sync.routing import Router, event_name
from sync.targets.events import event_attributes

log = structlog.get_logger(__name__)

CREDENTIALS_TTL = 1.0  # seconds a process trusts what it read about a source
MAX_KEY = 200
SIGNATURE_TOLERANCE_S = 300
TIMESTAMP_HEADER = b"x-signature-timestamp"
ERRORS_SHOWN = 20  # rejected records detailed in an answer: its size must not grow with the body
MESSAGE_CHARS = 200
COMMITS_IN_FLIGHT = 4  # per web process
WAKE_EVERY = 0.1  # seconds: one Redis round trip per source and process, however busy
INBOX = IngestRecord.__table__  # type: ignore[attr-defined]
SOURCES = IngestSource.__table__  # type: ignore[attr-defined]


class PipelineCache:
    """Compiled pipelines by the content of their spec (compiling is what costs; a version id alone
    could name different specs in two databases one process talks to)."""

    def __init__(self, size: int = 128) -> None:  # a source routing a whole tracking plan holds ~15
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


def router_of(default: MappingVersion | None, routes: dict[str, MappingVersion]) -> Router[Pipeline]:
    """Compiled pipelines by route key (from the cache), and the default for records naming no event."""
    return Router(
        {key: PIPELINES.get(version) for key, version in routes.items()},
        PIPELINES.get(default) if default is not None else None,
    )


# ---------------------------------------------------------------- checks


def check_token(token_hash: str | None, authorization: str) -> None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise IngestError(401, "Send the source's token as `Authorization: Bearer <token>`.")
    # Compared even for an unknown or revoked source, so timing does not tell which ids exist.
    given = hash_token(token.strip())
    if not hmac.compare_digest(given, token_hash or "0" * 64) or token_hash is None:
        raise IngestError(401, "This token is not valid for this source (wrong, rotated or revoked).")


def check_signature(
    secret: str, body: bytes, header: str | None, timestamp: str | None = None, now: float | None = None
) -> None:
    """The plain signature covers the body; with ``X-Signature-Timestamp`` it covers
    ``<timestamp>.<body>`` and must be within ``SIGNATURE_TOLERANCE_S`` of now, so a captured
    request cannot be replayed later."""
    if not header:
        raise IngestError(
            401,
            "This source requires signed requests: send `X-Signature: sha256=<hex HMAC-SHA256 of the body>`.",
        )
    if timestamp is not None:
        stamp = timestamp.strip()
        if not stamp.isdigit():
            raise IngestError(401, "X-Signature-Timestamp must be the Unix time in whole seconds.")
        skew = abs((time.time() if now is None else now) - int(stamp))
        if skew > SIGNATURE_TOLERANCE_S:
            raise IngestError(
                401,
                f"X-Signature-Timestamp is {int(skew)} s away from the console's clock (at most "
                f"{SIGNATURE_TOLERANCE_S} s): sign each request when it is sent.",
            )
        if not hmac.compare_digest(
            header.strip().lower().encode(), sign(secret, stamp.encode() + b"." + body).encode()
        ):
            raise IngestError(
                401,
                "X-Signature does not match: with X-Signature-Timestamp it must be sha256=<hex "
                "HMAC-SHA256 of `<timestamp>.<raw body>`, keyed with the source's signing secret>.",
            )
        return
    if not hmac.compare_digest(header.strip().lower().encode(), sign(secret, body).encode()):
        raise IngestError(
            401,
            "X-Signature does not match the body: it must be sha256=<hex HMAC-SHA256 of the exact raw "
            "body, keyed with the source's signing secret>.",
        )


def parse_records(body: bytes, max_records: int | None = None) -> list[dict[str, Any]]:
    """One JSON object, or an array of objects; anything else is a 400 that says what is wrong,
    and more than ``max_records`` a 413."""
    if not body.strip():
        raise IngestError(400, "The body is empty: send a JSON object, or an array of objects.")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngestError(400, f"The body is not valid JSON: {exc}.") from None
    records = document if isinstance(document, list) else [document]
    if not records:
        raise IngestError(400, "The array is empty: send at least one record.")
    if max_records is not None and len(records) > max_records:
        raise IngestError(
            413,
            f"The body holds {len(records):,} records; at most {max_records:,} per request "
            "(INGEST_MAX_RECORDS). Send them in several requests.",
        )
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
    router: Router[Pipeline], records: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int, list[tuple[int, str]]]:
    """Inbox rows for the records (each mapped alone by its event's route, so an order never spans
    two records), the errors of refused ones for the answer, how many the mapping skips on purpose,
    and (index, dedup key) of records kept unrouted (their event has no route; keyed by content)."""
    now = utcnow()
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    unrouted: list[tuple[int, str]] = []
    skipped = 0
    for index, record in enumerate(records):
        route, pipeline = router.pick(record)
        if pipeline is None:
            unrouted.append((index, body_key(record)))
            rows.append(
                {
                    "dedup_key": unrouted[-1][1],
                    "body": record,
                    "route": route,
                    "received_at": now,
                    "status": InboxStatus.UNROUTED,
                    "error_kind": None,
                    "last_error": None,
                    "attempts": 0,
                }
            )
            continue
        errors: list[Issue] = []
        key = None
        skip = False
        for result in pipeline.run([(index + 1, record)]):
            errors.extend(result.errors)
            skip = skip or result.skipped
            if result.items and key is None:
                unique_id = event_attributes(result.items[0]).get("unique_id")
                if unique_id is not None:
                    # Klaviyo keeps one event per metric and unique_id, and a refund reuses its
                    # order's id: a routed record's key names its route. Records of the source's
                    # own mapping keep the plain key they always had.
                    key = _key(f"{route}:{unique_id}" if route else str(unique_id))
        if skip and not errors:
            skipped += 1
            continue
        row: dict[str, Any] = {
            "dedup_key": key or body_key(record),
            "body": record,
            "route": route,
            "received_at": now,
            "status": InboxStatus.PENDING,
            "error_kind": None,
            "last_error": None,
            "attempts": 0,
        }
        if errors:
            message = "; ".join(f"{e.column or e.rule}: {e.message}" for e in errors)
            row.update(status=InboxStatus.FAILED, error_kind="mapping", last_error=message[:2000])
            details = [
                {"rule": e.rule, "field": e.column, "message": e.message[:MESSAGE_CHARS]} for e in errors
            ]
            rejected.append({"index": index, "errors": details[:ERRORS_SHOWN]})
        rows.append(row)
    return rows, rejected, skipped, unrouted


# ---------------------------------------------------------------- storing

# What a failed store raises, whichever writer: the API answers 503 ("nothing was kept, retry").
STORE_ERRORS: tuple[type[BaseException], ...] = (
    SQLAlchemyError,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # What asyncpg raises on a connection the server cut while it sat in a pool (asyncpg #1069).
    asyncpg.InternalClientError,
)

# One statement, one round trip, whatever the group's size: the rows travel as arrays, so the text
# (and asyncpg's prepared statement) never changes. Outside a transaction it commits by itself.
PG_INSERT = """
INSERT INTO ingest_inbox
    (source_id, dedup_key, body, status, error_kind, last_error, route, attempts, received_at)
SELECT r.source_id, r.dedup_key, r.body, r.status, r.error_kind, r.last_error, r.route, 0, $8
FROM unnest($1::int[], $2::text[], $3::jsonb[], $4::text[], $5::text[], $6::text[], $7::text[])
    AS r(source_id, dedup_key, body, status, error_kind, last_error, route)
ON CONFLICT (source_id, dedup_key) DO NOTHING
RETURNING source_id, dedup_key
"""
PG_COUNTS = """
UPDATE ingest_sources SET duplicate_count = duplicate_count + $2, failed_count = failed_count + $3
WHERE id = $1
"""


ADAPTER_ONLY_OPTIONS = ("prepared_statement_cache_size", "prepared_statement_name_func", "async_fallback")


async def _no_reset(_conn: asyncpg.Connection) -> None:
    """The writer never changes session state, so a connection going back to the pool needs no
    reset round trip (asyncpg's default runs four statements)."""


class PostgresWriter:
    """Inserts with asyncpg on a few connections of its own: no pool ping, no BEGIN/COMMIT round
    trips, no SQL compiled per group size (together about half the API's CPU under load)."""

    def __init__(self, engine: AsyncEngine, connections: int) -> None:
        # Connect exactly as the app's engine does (`?ssl=require` and the like): SQLAlchemy's own
        # reading of DATABASE_URL, less the options only its asyncpg adapter understands.
        _, connect = engine.dialect.create_connect_args(engine.url)
        for adapter_only in (
            "prepared_statement_cache_size",
            "prepared_statement_name_func",
            "async_fallback",
        ):
            connect.pop(adapter_only, None)
        # Opened on first use (most consoles never ingest) and then kept: a connection closed while
        # idle would be opened again in the middle of the next burst.
        self.pool = asyncpg.create_pool(
            **connect, min_size=0, max_size=connections, reset=_no_reset, max_inactive_connection_lifetime=0
        )
        self.ready = False
        self.opening = asyncio.Lock()

    async def _pool(self) -> asyncpg.Pool:
        if not self.ready:
            async with self.opening:
                if not self.ready:
                    await self.pool
                    self.ready = True
        return self.pool

    async def insert(self, params: list[dict[str, Any]]) -> list[tuple[int, str]]:
        """Store the rows (a repeated key is skipped); returns the (source, key) pairs stored."""
        # Key order: two commits inserting the same keys can never wait on each other in a cycle.
        params = sorted(params, key=lambda p: (p["source_id"], p["dedup_key"]))
        columns = ("source_id", "dedup_key", "body", "status", "error_kind", "last_error", "route")
        arrays = [[p.get(c) for p in params] for c in columns]
        arrays[2] = [orjson.dumps(body).decode() for body in arrays[2]]
        arrays[3] = [str(status) for status in arrays[3]]
        # One receipt time for the group: its requests arrived within the same few milliseconds.
        rows = await self._on_connection(
            lambda conn: conn.fetch(PG_INSERT, *arrays, params[0]["received_at"])
        )
        return [(row[0], row[1]) for row in rows]

    async def add_counts(self, counts: dict[int, tuple[int, int]]) -> None:
        """Count repeats and refused records on their sources: after the insert, in its own
        statement, so the usual group never waits on a source's row lock."""
        args = [(sid, dup, refused) for sid, (dup, refused) in counts.items()]
        await self._on_connection(lambda conn: conn.executemany(PG_COUNTS, args))

    async def _on_connection(
        self, operation: Callable[[asyncpg.pool.PoolConnectionProxy[asyncpg.Record]], Awaitable[Any]]
    ) -> Any:
        pool = await self._pool()
        async with pool.acquire() as conn:
            try:
                return await operation(conn)
            except BaseException:
                # A statement that broke may leave the connection half-way through the protocol (a
                # server restart does): never hand it to the next commit; the pool opens a new one.
                conn.terminate()
                raise

    async def close(self) -> None:
        if self.ready:
            await self.pool.close()


class SqlAlchemyWriter:
    """SQLite (the embedded default): one writer at a time, so one transaction per group."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.statement = (
            sqlite_insert(INBOX)
            .on_conflict_do_nothing(index_elements=["source_id", "dedup_key"])
            .returning(INBOX.c.source_id, INBOX.c.dedup_key)
        )

    async def insert(self, params: list[dict[str, Any]]) -> list[tuple[int, str]]:
        async with self.engine.begin() as conn:
            return [(row[0], row[1]) for row in await conn.execute(self.statement, params)]

    async def add_counts(self, counts: dict[int, tuple[int, int]]) -> None:
        async with self.engine.begin() as conn:
            for source_id, (duplicates, refused) in counts.items():
                await conn.execute(
                    update(SOURCES)
                    .where(SOURCES.c.id == source_id)
                    .values(
                        duplicate_count=SOURCES.c.duplicate_count + duplicates,
                        failed_count=SOURCES.c.failed_count + refused,
                    )
                )

    async def close(self) -> None:
        return None


@dataclass
class _Waiting:
    source_id: int
    rows: list[dict[str, Any]]
    done: asyncio.Future[set[str]]


class GroupCommitter:
    """Stores the rows of concurrent requests in one statement; returns each request's new keys.

    Up to ``max_drainers`` tasks commit at once, each taking every request waiting when it starts a
    commit; a task ends when nobody waits, so none outlives the requests (or the loop) it serves.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        # A commit mostly waits for the disk: a few on their own connections overlap those waits.
        # SQLite has one writer, so one is all it can use.
        self.writer: PostgresWriter | SqlAlchemyWriter
        if engine.dialect.name == "postgresql":
            self.max_drainers = COMMITS_IN_FLIGHT
            self.writer = PostgresWriter(engine, COMMITS_IN_FLIGHT)
        else:
            self.max_drainers = 1
            self.writer = SqlAlchemyWriter(engine)
        self.waiting: list[_Waiting] = []
        self.drainers: set[asyncio.Task[None]] = set()

    async def store(self, source_id: int, rows: list[dict[str, Any]]) -> set[str]:
        done: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self.waiting.append(_Waiting(source_id, rows, done))
        if len(self.drainers) < self.max_drainers:
            task = asyncio.create_task(self._drain())
            self.drainers.add(task)
            task.add_done_callback(self.drainers.discard)
        return await done

    async def _drain(self) -> None:
        while self.waiting:
            group, self.waiting = self.waiting, []
            try:
                stored = await self._commit(group)
            except BaseException as exc:
                # Whatever broke (the database, or we were cancelled), nobody of this group may hang.
                cancelled = RuntimeError("the ingest commit was cancelled")
                failed = exc if isinstance(exc, Exception) else cancelled
                for entry in group:
                    if not entry.done.done():
                        entry.done.set_exception(failed)
                if not isinstance(exc, Exception):
                    for entry in self.waiting:
                        if not entry.done.done():
                            entry.done.set_exception(failed)
                    self.waiting = []
                    raise
                continue
            for entry, keys in zip(group, stored, strict=True):
                if not entry.done.done():
                    entry.done.set_result(keys)

    async def _commit(self, group: list[_Waiting]) -> list[set[str]]:
        owner: dict[tuple[int, str], int] = {}
        params: list[dict[str, Any]] = []
        for index, entry in enumerate(group):
            for row in entry.rows:
                key = (entry.source_id, row["dedup_key"])
                if key not in owner:  # a repeat within the group is a duplicate of the first
                    owner[key] = index
                    params.append({**row, "source_id": entry.source_id})
        stored: list[set[str]] = [set() for _ in group]
        if not params:
            return stored
        for source_id, dedup_key in await self.writer.insert(params):
            stored[owner[(source_id, dedup_key)]].add(dedup_key)
        counts: dict[int, tuple[int, int]] = {}
        for entry, keys in zip(group, stored, strict=True):
            duplicates = len(entry.rows) - len(keys)
            refused = sum(
                1 for row in entry.rows if row["status"] == InboxStatus.FAILED and row["dedup_key"] in keys
            )
            if duplicates or refused:
                before = counts.get(entry.source_id, (0, 0))
                counts[entry.source_id] = (before[0] + duplicates, before[1] + refused)
        if counts:
            try:
                await self.writer.add_counts(counts)
            except Exception as exc:
                # The records are stored, and the answer says so; only a counter on the page is short.
                log.warning("ingest could not update the source's counters", error=str(exc)[:200])
        return stored

    async def close(self) -> None:
        """Close the writer's own connections (at app shutdown)."""
        await self.writer.close()


# ---------------------------------------------------------------- the inbox


@dataclass
class Credentials:
    """What a request is checked against: read from the database at most once a second."""

    token_hash: str | None
    secret: str | None
    router: Router[Pipeline] | None  # None: the source's only mapping was deleted
    read_at: float


@dataclass
class Accepted:
    """The 202 answer: how many records were stored, repeats dropped, and records the mapping refused."""

    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    skipped: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    # Kept, not sent: their event has no route yet ({"index", "event"}).
    unrouted: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """received = accepted + unrouted + duplicates + skipped + rejected; ``errors`` details the first
        ``ERRORS_SHOWN`` rejected records (their index in the body), so the answer stays small, and
        ``errors_omitted`` (only when some were) says how many more there are."""
        answer = {
            "received": self.received,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "rejected": len(self.rejected),
            "errors": self.rejected[:ERRORS_SHOWN],
        }
        if len(self.rejected) > ERRORS_SHOWN:
            answer["errors_omitted"] = len(self.rejected) - ERRORS_SHOWN
        if self.unrouted:
            # Only when there are some: the answer every store already parses stays as it was.
            answer["unrouted"] = len(self.unrouted)
            answer["unrouted_events"] = self.unrouted[:ERRORS_SHOWN]
        return answer


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
        self.reading: dict[int, asyncio.Future[Credentials]] = {}
        self.waking: dict[int, asyncio.Task[None]] = {}
        self.wake_again: set[int] = set()
        self.loop = asyncio.get_running_loop()

    async def _credentials(self, source_id: int, fresh: bool = False) -> Credentials:
        cached = self.credentials.get(source_id)
        if cached is not None and not fresh and time.monotonic() - cached.read_at < CREDENTIALS_TTL:
            return cached
        if fresh:
            # After a token mismatch: a read that began before the rotation might miss it.
            return await self._read_credentials(source_id)
        # Once a second the cache runs out while hundreds of requests arrive: one read serves them all.
        reading = self.reading.get(source_id)
        if reading is None:
            reading = self.reading[source_id] = asyncio.ensure_future(self._read_credentials(source_id))
            reading.add_done_callback(lambda _: self.reading.pop(source_id, None))
        return await asyncio.shield(reading)

    async def _read_credentials(self, source_id: int) -> Credentials:
        async with self.sessionmaker() as db:
            loaded = await load_source(db, source_id)
            routes = await route_versions(db, source_id) if loaded is not None else {}
        if loaded is None:
            found = Credentials(None, None, None, time.monotonic())
        else:
            source, version = loaded
            secret = None
            if source.signing_secret_encrypted:
                secret = decrypt_secret(self.settings.secret, source.signing_secret_encrypted)
            router = router_of(version, routes)
            orphaned = source.mapping_id is not None and version is None and not routes
            found = Credentials(
                source.token_hash if source.active else None,
                secret,
                None if orphaned else router,
                time.monotonic(),
            )
        self.credentials[source_id] = found
        return found

    def forget(self, source_id: int) -> None:
        """This process changed the source (rotate, revoke, signing): read it again next time."""
        self.credentials.pop(source_id, None)

    async def accept(
        self,
        source_id: int,
        authorization: str,
        signature: str | None,
        body: bytes,
        timestamp: str | None = None,
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
            check_signature(creds.secret, body, signature, timestamp)
        records = parse_records(body, self.settings.ingest_max_records)
        if creds.router is None:
            raise IngestError(409, "The source's mapping was deleted; choose another mapping in the console.")
        rows, rejected, skipped, unrouted = map_records(creds.router, records)
        stored = await self.committer.store(source_id, rows) if rows else set()
        answer = Accepted(received=len(records), skipped=skipped, rejected=rejected)
        pending = {row["dedup_key"] for row in rows if row["status"] == InboxStatus.PENDING}
        answer.accepted = len(pending & stored)
        answer.unrouted = [
            {"index": index, "event": event_name(records[index])} for index, key in unrouted if key in stored
        ]
        # Each record once: a refused record is rejected even when it repeats one; a kept unrouted
        # record is counted as unrouted, not accepted.
        answer.duplicates = len(rows) - len(rejected) - answer.accepted - len(answer.unrouted)
        if answer.accepted:
            self._wake_soon(source_id)
        return answer

    def _wake_soon(self, source_id: int) -> None:
        """Wake the source's forwarder after this commit, without holding up the answer. The first
        wake-up goes at once; more asked for within ``WAKE_EVERY`` go as one at its end (a running
        forwarder only needs to know there is more, not how often that was said)."""
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
                await asyncio.sleep(WAKE_EVERY)
                if source_id not in self.wake_again:
                    break
        finally:
            self.waking.pop(source_id, None)

    async def close(self) -> None:
        """Let pending wake-ups go and close the store's own connections (at app shutdown)."""
        for task in list(self.waking.values()):
            task.cancel()
        await self.committer.close()


def inbox_for(state: Any) -> Inbox:
    """The web process's Inbox, made on first use for the app's current engine and event loop."""
    inbox: Inbox | None = getattr(state, "ingest_inbox", None)
    if inbox is None or inbox.engine is not state.engine or inbox.loop is not asyncio.get_running_loop():
        inbox = Inbox(state.engine, state.sessionmaker, state.settings, state.arq)
        state.ingest_inbox = inbox
    return inbox
