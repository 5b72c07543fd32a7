"""Job: list operations started from the Lists page (sync, count, create, rename, membership,
unsubscribe with its membership check, suppress). Each reads its ListOperation row, talks to Klaviyo
through the shared limiter, and records progress, per-row outcomes and an audit entry there.

Safe to run twice: a finished operation is skipped; membership and consent changes are idempotent.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import delete, or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from klaviyo.client import KlaviyoClient
from klaviyo.errors import KlaviyoError, RateLimited
from klaviyo.limiter import RateLimiter
from klaviyo.retry import RetryPolicy
from models import KlaviyoList, ListOperation, ListOpStatus, Upload
from models.base import utcnow
from models.klaviyo_list import ListOperationRow
from services import audit, list_targets, lists
from services.accounts import get_account, klaviyo_target
from sync.readers import CsvReader

log = structlog.get_logger(__name__)
MEMBERS_PER_CALL = 1000
CONSENT_PER_CALL = 100
CHECK_CHUNK = 500  # upload rows read, checked and committed together
# Creating a list: one try, so the daily limit's 429 (Retry-After: hours) is reported, not waited out.
ONE_TRY = RetryPolicy(max_attempts=1)


class OperationFailed(Exception):
    """Ends the operation as failed with this message for the operator."""


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


async def _client(ctx: dict[str, Any], op_id: int, kind: str) -> KlaviyoClient:
    async with ctx["sessionmaker"]() as db:
        target = klaviyo_target(await get_account(db), ctx["settings"])
    if kind == "create":
        # Not through the shared limiter: the daily limit's 429 would pause every list write for hours.
        return KlaviyoClient(target.api_key, base_url=target.base_url, http=ctx["http"], retry=ONE_TRY)
    limiter = RateLimiter(ctx["redis"], time_scale=ctx["settings"].klaviyo_time_scale)
    client = KlaviyoClient(target.api_key, base_url=target.base_url, limiter=limiter, http=ctx["http"])
    # Its own turns at the shared limiter (ids restart in a new database: keep the name unique).
    return client.for_run(f"list-op:{op_id}:{uuid.uuid4().hex[:6]}")


def _upsert(db: AsyncSession, row: KlaviyoList | None, resource: dict[str, Any]) -> KlaviyoList:
    attrs = resource.get("attributes") or {}
    row = row or KlaviyoList(klaviyo_id=str(resource["id"]), name="")
    row.name = str(attrs.get("name") or row.name or resource["id"])[:255]
    row.opt_in_process = attrs.get("opt_in_process") or row.opt_in_process
    row.created = _when(attrs.get("created")) or row.created
    row.updated = _when(attrs.get("updated")) or row.updated
    if attrs.get("profile_count") is not None:
        row.profile_count = int(attrs["profile_count"])
        row.counted_at = utcnow()
    row.synced_at = utcnow()
    db.add(row)
    return row


async def _row(db: AsyncSession, klaviyo_id: str) -> KlaviyoList | None:
    return (await db.exec(select(KlaviyoList).where(KlaviyoList.klaviyo_id == klaviyo_id))).first()


class Operation:
    """Runs one ListOperation; its contacts are ListOperationRows, worked through a chunk at a time
    (each chunk's outcomes committed before the next), so any number of rows keeps memory flat."""

    def __init__(self, ctx: dict[str, Any], op: ListOperation, client: KlaviyoClient) -> None:
        self.ctx = ctx
        self.op = op
        self.client = client

    @property
    def op_id(self) -> int:
        assert self.op.id is not None
        return self.op.id

    async def _chunks(self, size: int, *, pending: bool = True) -> AsyncIterator[list[ListOperationRow]]:
        """The rows in row order, ``size`` at a time (``pending``: only those without an outcome yet,
        so a job run again after a worker died carries on where it was)."""
        after = 0
        while True:
            query = select(ListOperationRow).where(
                ListOperationRow.operation_id == self.op_id, col(ListOperationRow.row) > after
            )
            if pending:
                query = query.where(
                    col(ListOperationRow.status).is_(None), col(ListOperationRow.error).is_(None)
                )
            async with self.ctx["sessionmaker"]() as db:
                rows = list((await db.exec(query.order_by(col(ListOperationRow.row)).limit(size))).all())
            if not rows:
                return
            yield rows
            after = rows[-1].row

    async def _save(self, rows: list[ListOperationRow], *, new: bool = False) -> None:
        """Commit these rows' outcomes and the operation's progress (the page polls it)."""
        async with self.ctx["sessionmaker"]() as db:
            db.add_all(rows)
            await db.flush()
            op = await db.get(ListOperation, self.op_id)
            assert op is not None
            op.done = await _finished_rows(db, self.op_id)
            if new:
                op.total = await lists.count_rows(db, self.op_id)
            db.add(op)
            await db.commit()

    # -- the table ------------------------------------------------------------------------------

    async def sync(self) -> dict[str, Any]:
        """Every list in the account, all pages, into klaviyo_lists; lists gone from Klaviyo are removed."""
        seen: set[str] = set()
        added = 0
        async with self.ctx["sessionmaker"]() as db:
            known = {r.klaviyo_id: r for r in (await db.exec(select(KlaviyoList))).all()}
            async for resource in self.client.get_lists():
                seen.add(str(resource["id"]))
                added += str(resource["id"]) not in known
                _upsert(db, known.get(str(resource["id"])), resource)
            gone = [r for k, r in known.items() if k not in seen]
            for row in gone:
                await db.delete(row)
            await db.commit()
        return {"lists": len(seen), "added": added, "removed": len(gone)}

    async def count(self) -> dict[str, Any]:
        """The member count (its rate class is 1/s, 15/min: only on request, cached in the row)."""
        resource = await self.client.get_list(self._list_id())
        async with self.ctx["sessionmaker"]() as db:
            row = _upsert(db, await _row(db, self._list_id()), resource)
            await db.commit()
            return {"profile_count": row.profile_count}

    async def create(self) -> dict[str, Any]:
        name = str(self.op.params["name"])
        try:
            # The create answer carries the list: no follow-up read, whose failure would report a
            # list that exists as failed (and a second Create would make a duplicate).
            resource = await self.client.create_list_resource(name, self.op.params.get("opt_in_process"))
        except RateLimited as exc:
            if exc.retry_after > 60 or "daily" in str(exc).lower():
                raise OperationFailed(
                    "Klaviyo allows 150 new lists per account per day and that limit is reached "
                    f"({exc}). Try again tomorrow, or reuse or rename an existing list."
                ) from exc
            raise OperationFailed(
                f"Klaviyo is busy (rate limited); try again in a few seconds ({exc})."
            ) from exc
        list_id = str(resource["id"])
        async with self.ctx["sessionmaker"]() as db:
            row = _upsert(db, await _row(db, list_id), resource)
            if row.profile_count is None:
                row.profile_count, row.counted_at = 0, utcnow()  # a new list has no members yet
            op = await db.get(ListOperation, self.op_id)
            assert op is not None
            op.list_id = list_id
            db.add(op)
            await db.commit()
        return {"list_id": list_id, "name": name}

    async def rename(self) -> dict[str, Any]:
        doc = await self.client.rename_list(self._list_id(), str(self.op.params["name"]))
        async with self.ctx["sessionmaker"]() as db:
            _upsert(db, await _row(db, self._list_id()), doc["data"])
            await db.commit()
        return {"name": self.op.params["name"]}

    # -- membership (no consent change) -------------------------------------------------------

    async def members(self, add: bool) -> dict[str, Any]:
        """Profile ids looked up 100 per request (an add creates the missing profiles, without
        consent), then added or removed up to 1,000 per request."""
        change = self.client.add_list_members if add else self.client.remove_list_members
        async for rows in self._chunks(MEMBERS_PER_CALL):
            contacts = [_contact(r) for r in rows]
            await list_targets.resolve_contacts(self.client, contacts, create_missing=add)
            ready = [c for c in contacts if c.get("profile_id") and not c.get("error")]
            if ready:
                await change(self._list_id(), list(dict.fromkeys(c["profile_id"] for c in ready)))
            for row, contact in zip(rows, contacts, strict=True):
                row.profile_id, row.error = contact.get("profile_id"), contact.get("error")
                if not row.error:
                    row.status = "added" if add else "removed"
            await self._save(rows)
        return await self._tally()

    # -- consent ------------------------------------------------------------------------------

    async def _rows_from_upload(self) -> AsyncIterator[list[ListOperationRow]]:
        """An upload's column (an unsubscribe from a CSV) as new rows, CHECK_CHUNK at a time; read
        here, not in the request, and never whole in memory."""
        async with self.ctx["sessionmaker"]() as db:
            upload = await db.get(Upload, int(self.op.params["upload_id"]))
            # A job run again after its worker died starts the (read-only) check over.
            await db.exec(delete(ListOperationRow).where(col(ListOperationRow.operation_id) == self.op_id))
            await db.commit()
        if upload is None:
            raise OperationFailed("The upload no longer exists.")
        column = str(self.op.params.get("column") or "")
        if column not in (upload.headers or []):
            raise OperationFailed(f"The upload has no column {column!r}.")
        path = Path(self.ctx["settings"].upload_dir) / upload.stored_as
        region = str(self.op.params.get("region") or "US")
        values: list[tuple[int, str]] = []
        with CsvReader(path, encoding=upload.encoding, delimiter=upload.delimiter) as reader:
            for number, row in reader:
                if (row.get(column) or "").strip():
                    values.append((number, row[column]))
                if len(values) >= CHECK_CHUNK:
                    yield [c.as_row(self.op_id) for c in lists.contacts_from(values, region)]
                    values = []
        if values:
            yield [c.as_row(self.op_id) for c in lists.contacts_from(values, region)]

    async def _scope(self, rows: list[ListOperationRow]) -> None:
        """Mark each usable row ``list`` (a member: unsubscribed from the list) or ``global``.

        Only these rows are looked up, among the list's members (GET /api/lists/{id}/profiles with
        ``any(email,[...])``, 100 per request, 75/s): the cost follows the rows checked, not the
        list's size. Paging every member id instead is never cheaper: the rows would still need
        their profile ids (one lookup per 100), and a big list takes one request per 100 members.
        """
        usable = [r for r in rows if not r.error]
        if not self.op.list_id:
            found: list[str | None] = [None] * len(usable)
        else:
            find = partial(self.client.find_list_members, self.op.list_id)
            found = await list_targets.ids_for(find, [_contact(r) for r in usable])
        for row, profile_id in zip(usable, found, strict=True):
            row.profile_id = profile_id or row.profile_id
            row.scope = "list" if profile_id else "global"

    async def unsubscribe_check(self) -> dict[str, Any]:
        """Which contacts are in the list (unsubscribed from it) and which are not (global)."""
        if self.op.params.get("upload_id"):
            async for rows in self._rows_from_upload():
                await self._scope(rows)
                await self._save(rows, new=True)
        else:
            async for rows in self._chunks(CHECK_CHUNK, pending=False):
                await self._scope(rows)
                await self._save(rows)
        async with self.ctx["sessionmaker"]() as db:
            count = partial(lists.count_rows, db, self.op_id)
            return {
                "in_list": await count(col(ListOperationRow.scope) == "list"),
                "global": await count(col(ListOperationRow.scope) == "global"),
                "invalid": await count(col(ListOperationRow.error).is_not(None)),
            }

    async def unsubscribe(self) -> dict[str, Any]:
        """The rows the operator confirmed, 100 per request. "Members only" checks membership again
        first: someone removed from the list since the check would now be unsubscribed globally."""
        channels = self.op.params.get("channels") or ["email"]
        members_only = self.op.params.get("scope") == "members"
        async for rows in self._chunks(CONSENT_PER_CALL):
            if members_only:
                before = {r.row: r.scope for r in rows}
                await self._scope(rows)
                for row in rows:
                    if before[row.row] == "list" and row.scope != "list":
                        row.error = "no longer in the list: skipped (it would have been a global unsubscribe)"
            items = []
            for row in rows:
                if row.error:
                    continue
                subs: dict[str, Any] = {}
                if "email" in channels and row.email:
                    subs["email"] = {"marketing": {"consent": "UNSUBSCRIBED"}}
                if "sms" in channels and row.phone_number:
                    subs["sms"] = {"marketing": {"consent": "UNSUBSCRIBED"}}
                if not subs:
                    row.error = f"no {' or '.join(channels)} address to unsubscribe"
                    continue
                attrs = {k: v for k, v in (("email", row.email), ("phone_number", row.phone_number)) if v}
                items.append({"type": "profile", "attributes": {**attrs, "subscriptions": subs}})
            if items:
                await self.client.unsubscribe_profiles(items, self.op.list_id)
            for row in rows:
                if not row.error:
                    row.status = (
                        "unsubscribed from the list" if row.scope == "list" else "unsubscribed globally"
                    )
            await self._save(rows)
        return await self._tally()

    async def suppress(self) -> dict[str, Any]:
        async for rows in self._chunks(CONSENT_PER_CALL):
            for row in rows:
                if not row.email:
                    row.error = "suppression needs an email address"
            ready = [r for r in rows if not r.error]
            if ready:
                await self.client.suppress_profiles([str(r.email) for r in ready])
            for row in ready:
                row.status = "suppressed"
            await self._save(rows)
        return await self._tally()

    # -- helpers ------------------------------------------------------------------------------

    def _list_id(self) -> str:
        if not self.op.list_id:
            raise OperationFailed("This operation needs a list.")
        return self.op.list_id

    async def _tally(self) -> dict[str, Any]:
        async with self.ctx["sessionmaker"]() as db:
            failed = await lists.count_rows(db, self.op_id, col(ListOperationRow.error).is_not(None))
            ok = await lists.count_rows(
                db,
                self.op_id,
                col(ListOperationRow.status).is_not(None),
                col(ListOperationRow.error).is_(None),
            )
        return {"ok": ok, "failed": failed}


async def _rows_from_params(db: AsyncSession, op: ListOperation) -> None:
    """Operations queued before contacts had their own table carry them in ``params``."""
    contacts = op.params.get("contacts")
    if not contacts or not op.id or await lists.count_rows(db, op.id):
        return
    for n, c in enumerate(contacts, start=1):
        fields = {k: c.get(k) for k in ("email", "phone_number", "profile_id", "scope", "error")}
        db.add(
            ListOperationRow(
                operation_id=op.id, row=int(c.get("row") or n), raw=str(c.get("raw") or "")[:320], **fields
            )
        )


def _contact(row: ListOperationRow) -> dict[str, Any]:
    return {"email": row.email, "phone_number": row.phone_number, "error": row.error}


async def _finished_rows(db: AsyncSession, op_id: int) -> int:
    done = or_(col(ListOperationRow.status).is_not(None), col(ListOperationRow.error).is_not(None))
    return await lists.count_rows(db, op_id, done)


HANDLERS: dict[str, Callable[[Operation], Awaitable[dict[str, Any]]]] = {
    "sync": Operation.sync,
    "count": Operation.count,
    "create": Operation.create,
    "rename": Operation.rename,
    "add": lambda o: o.members(add=True),
    "remove": lambda o: o.members(add=False),
    "unsubscribe_check": Operation.unsubscribe_check,
    "unsubscribe": Operation.unsubscribe,
    "suppress": Operation.suppress,
}


async def list_operation(ctx: dict[str, Any], op_id: int, kind: str | None = None) -> dict[str, Any]:
    """Run one queued list operation to its end and record the outcome (and an audit entry)."""
    async with ctx["sessionmaker"]() as db:
        op = await db.get(ListOperation, op_id)
        if op is None or not op.status.active:
            return {"operation": op_id, "skipped": "missing or finished"}
        if op.status == ListOpStatus.RUNNING and op.kind == "create":
            # A worker died while creating: the list may exist; creating again could make a second.
            op.status, op.finished_at = ListOpStatus.FAILED, utcnow()
            op.message = (
                "Interrupted while creating the list: sync the lists and check before creating it again."
            )
            db.add(op)
            await db.commit()
            return {"operation": op_id, "status": op.status.value}
        # RUNNING: arq retries a job whose worker died; the other operations are safe to run again.
        op.status = ListOpStatus.RUNNING
        db.add(op)
        await _rows_from_params(db, op)
        await db.commit()
        await db.refresh(op)
    handler = HANDLERS.get(op.kind)
    status, message, summary = ListOpStatus.COMPLETED, None, {}
    try:
        if handler is None:
            raise OperationFailed(f"Unknown list operation {op.kind!r}.")
        client = await _client(ctx, op_id, op.kind)
        summary = await handler(Operation(ctx, op, client))
        if op.kind == "unsubscribe_check":
            status = ListOpStatus.NEEDS_CONFIRMATION
    except OperationFailed as exc:
        status, message = ListOpStatus.FAILED, str(exc)
    except KlaviyoError as exc:
        status, message = ListOpStatus.FAILED, f"Klaviyo answered with an error: {exc}"
    except Exception as exc:  # the page must never show "running" forever
        log.exception("list operation failed", op_id=op_id)
        status, message = ListOpStatus.FAILED, f"Unexpected error: {exc}"
    async with ctx["sessionmaker"]() as db:
        row = await db.get(ListOperation, op_id)
        assert row is not None
        row.done = await _finished_rows(db, op_id)
        row.status, row.message = status, message
        row.summary = {**row.summary, **summary}
        row.finished_at = utcnow()
        db.add(row)
        audit.record(
            db,
            None,
            f"list.{row.kind}.{status.value}",
            target=f"list {row.list_id}" if row.list_id else None,
            user=None,
            username="worker",
            operation=op_id,
            **{k: v for k, v in row.summary.items() if isinstance(v, int | str)},
        )
        await db.commit()
    log.info("list operation ended", op_id=op_id, kind=op.kind, status=status.value)
    return {"operation": op_id, "status": status.value}
