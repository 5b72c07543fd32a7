"""Job: list operations started from the Lists page (sync, count, create, rename, membership,
unsubscribe with its membership check, suppress). Each reads its ListOperation row, talks to Klaviyo
through the shared limiter, and records progress, per-row outcomes and an audit entry there.

Safe to run twice: a finished operation is skipped; membership and consent changes are idempotent.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from klaviyo.client import KlaviyoClient
from klaviyo.errors import KlaviyoError, RateLimited
from klaviyo.limiter import RateLimiter
from klaviyo.retry import RetryPolicy
from models import KlaviyoList, ListOperation, ListOpStatus, Upload
from models.base import utcnow
from services import audit, lists
from services.accounts import get_account, klaviyo_target
from sync.readers import CsvReader

log = structlog.get_logger(__name__)
MEMBERS_PER_CALL = 1000
CONSENT_PER_CALL = 100
LOOKUP_PER_CALL = 100
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
    """Runs one ListOperation; ``progress`` commits what is done so the page can show it."""

    def __init__(self, ctx: dict[str, Any], op: ListOperation, client: KlaviyoClient) -> None:
        self.ctx = ctx
        self.op = op
        self.client = client
        self.outcomes: list[dict[str, Any]] = [dict(o) for o in op.params.get("contacts", [])]

    async def progress(self, **summary: Any) -> None:
        async with self.ctx["sessionmaker"]() as db:
            op = await db.get(ListOperation, self.op.id)
            assert op is not None
            op.outcomes = list(self.outcomes)
            op.done = sum(1 for o in self.outcomes if o.get("status") or o.get("error"))
            op.summary = {**op.summary, **summary}
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
            list_id = await self.client.create_list(name, self.op.params.get("opt_in_process"))
        except RateLimited as exc:
            if exc.retry_after > 60 or "daily" in str(exc).lower():
                raise OperationFailed(
                    "Klaviyo allows 150 new lists per account per day and that limit is reached "
                    f"({exc}). Try again tomorrow, or reuse or rename an existing list."
                ) from exc
            raise OperationFailed(
                f"Klaviyo is busy (rate limited); try again in a few seconds ({exc})."
            ) from exc
        resource = await self.client.get_list(list_id)
        async with self.ctx["sessionmaker"]() as db:
            _upsert(db, await _row(db, list_id), resource)
            op = await db.get(ListOperation, self.op.id)
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

    async def _resolve(self) -> list[dict[str, Any]]:
        """Profile ids by upsert (profile-import), for every usable contact not resolved yet."""
        usable = [o for o in self.outcomes if not o.get("error")]
        for n, outcome in enumerate(usable, start=1):
            if not outcome.get("profile_id"):
                attrs = {k: outcome[k] for k in ("email", "phone_number") if outcome.get(k)}
                try:
                    outcome["profile_id"] = await self.client.import_profile(attrs)
                except KlaviyoError as exc:
                    if exc.status in (401, 403) or exc.status is None or exc.status >= 429:
                        raise
                    outcome["error"] = f"Klaviyo refused the profile: {exc}"
            if n % 50 == 0:
                await self.progress()
        return [o for o in usable if o.get("profile_id") and not o.get("error")]

    async def members(self, add: bool) -> dict[str, Any]:
        resolved = await self._resolve()
        change = self.client.add_list_members if add else self.client.remove_list_members
        for start in range(0, len(resolved), MEMBERS_PER_CALL):
            chunk = resolved[start : start + MEMBERS_PER_CALL]
            await change(self._list_id(), [o["profile_id"] for o in chunk])
            for outcome in chunk:
                outcome["status"] = "added" if add else "removed"
            await self.progress()
        return self._tally()

    # -- consent ------------------------------------------------------------------------------

    async def _contacts_from_upload(self) -> None:
        """The contacts of an upload's column (an unsubscribe from a CSV), read here, not in the request."""
        async with self.ctx["sessionmaker"]() as db:
            upload = await db.get(Upload, int(self.op.params["upload_id"]))
        if upload is None:
            raise OperationFailed("The upload no longer exists.")
        column = str(self.op.params.get("column") or "")
        if column not in (upload.headers or []):
            raise OperationFailed(f"The upload has no column {column!r}.")
        path = Path(self.ctx["settings"].upload_dir) / upload.stored_as
        values: list[tuple[int, str]] = []
        with CsvReader(path, encoding=upload.encoding, delimiter=upload.delimiter) as reader:
            for number, row in reader:
                if (row.get(column) or "").strip():
                    values.append((number, row[column]))
                if len(values) > lists.MAX_UPLOAD_CONTACTS:
                    raise OperationFailed(
                        f"More than {lists.MAX_UPLOAD_CONTACTS:,} rows: split the file "
                        "so that each check stays readable."
                    )
        region = str(self.op.params.get("region") or "US")
        self.outcomes = [c.as_dict() for c in lists.contacts_from(values, region)]
        async with self.ctx["sessionmaker"]() as db:
            op = await db.get(ListOperation, self.op.id)
            assert op is not None
            op.total = len(self.outcomes)
            db.add(op)
            await db.commit()

    async def unsubscribe_check(self) -> dict[str, Any]:
        """Which contacts are in the list (unsubscribed from it) and which are not (global)."""
        if self.op.params.get("upload_id"):
            await self._contacts_from_upload()
        list_id = self.op.list_id
        members = await self.client.list_member_ids(list_id) if list_id else set()
        for field in ("email", "phone_number"):
            wanted = [o for o in self.outcomes if o.get(field) and not o.get("error")]
            for start in range(0, len(wanted), LOOKUP_PER_CALL):
                chunk = wanted[start : start + LOOKUP_PER_CALL]
                found = await self.client.find_profile_ids(field, [o[field] for o in chunk])
                for outcome in chunk:
                    key = outcome[field].lower() if field == "email" else outcome[field]
                    outcome["profile_id"] = outcome.get("profile_id") or found.get(key)
        for outcome in self.outcomes:
            if not outcome.get("error"):
                in_list = bool(list_id) and outcome.get("profile_id") in members
                outcome["scope"] = "list" if in_list else "global"
        usable = [o for o in self.outcomes if not o.get("error")]
        return {
            "in_list": sum(o["scope"] == "list" for o in usable),
            "global": sum(o["scope"] == "global" for o in usable),
            "invalid": len(self.outcomes) - len(usable),
        }

    async def unsubscribe(self) -> dict[str, Any]:
        channels = self.op.params.get("channels") or ["email"]
        usable = [o for o in self.outcomes if not o.get("error")]
        for start in range(0, len(usable), CONSENT_PER_CALL):
            chunk = usable[start : start + CONSENT_PER_CALL]
            items = []
            for o in chunk:
                subs: dict[str, Any] = {}
                if "email" in channels and o.get("email"):
                    subs["email"] = {"marketing": {"consent": "UNSUBSCRIBED"}}
                if "sms" in channels and o.get("phone_number"):
                    subs["sms"] = {"marketing": {"consent": "UNSUBSCRIBED"}}
                if not subs:
                    o["error"] = f"no {' or '.join(channels)} address to unsubscribe"
                    continue
                attrs = {k: o[k] for k in ("email", "phone_number") if o.get(k)}
                items.append({"type": "profile", "attributes": {**attrs, "subscriptions": subs}})
            if items:
                await self.client.unsubscribe_profiles(items, self.op.list_id)
            for o in chunk:
                if not o.get("error"):
                    o["status"] = (
                        "unsubscribed from the list" if o.get("scope") == "list" else "unsubscribed globally"
                    )
            await self.progress()
        return self._tally()

    async def suppress(self) -> dict[str, Any]:
        usable = [o for o in self.outcomes if not o.get("error")]
        for o in usable:
            if not o.get("email"):
                o["error"] = "suppression needs an email address"
        usable = [o for o in usable if not o.get("error")]
        for start in range(0, len(usable), CONSENT_PER_CALL):
            chunk = usable[start : start + CONSENT_PER_CALL]
            await self.client.suppress_profiles([o["email"] for o in chunk])
            for o in chunk:
                o["status"] = "suppressed"
            await self.progress()
        return self._tally()

    # -- helpers ------------------------------------------------------------------------------

    def _list_id(self) -> str:
        if not self.op.list_id:
            raise OperationFailed("This operation needs a list.")
        return self.op.list_id

    def _tally(self) -> dict[str, Any]:
        return {
            "ok": sum(1 for o in self.outcomes if o.get("status") and not o.get("error")),
            "failed": sum(1 for o in self.outcomes if o.get("error")),
        }


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
        if op is None or op.status not in (ListOpStatus.QUEUED, ListOpStatus.RUNNING):
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
        await db.commit()
        await db.refresh(op)
    handler = HANDLERS.get(op.kind)
    status, message, summary = ListOpStatus.COMPLETED, None, {}
    operation: Operation | None = None
    try:
        if handler is None:
            raise OperationFailed(f"Unknown list operation {op.kind!r}.")
        client = await _client(ctx, op_id, op.kind)
        operation = Operation(ctx, op, client)
        summary = await handler(operation)
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
        if operation is not None:
            row.outcomes = operation.outcomes
            row.done = sum(1 for o in operation.outcomes if o.get("status") or o.get("error"))
        row.status, row.message = status, message
        row.summary = {**row.summary, **summary}
        row.finished_at = utcnow()
        db.add(row)
        audit.record(
            db,
            None,
            f"list.{row.kind}.{status.value}",
            target=f"list {row.list_id}" if row.list_id else None,
            username="worker",
            operation=op_id,
            **{k: v for k, v in row.summary.items() if isinstance(v, int | str)},
        )
        await db.commit()
    log.info("list operation ended", op_id=op_id, kind=op.kind, status=status.value)
    return {"operation": op_id, "status": status.value}
