"""Klaviyo lists: the synced table, list operations (worker jobs), and runs of an upload into a list."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy import ColumnElement, func, insert, literal
from sqlalchemy import select as sa_select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import (
    KlaviyoList,
    ListOperation,
    ListOpStatus,
    Mapping,
    MappingVersion,
    SyncRun,
    Upload,
    UploadStatus,
    User,
)
from models.klaviyo_list import ListOperationRow
from services import runs
from services.error_export import neutralise
from sync.issues import RuleError
from sync.mapping import Mapping as MappingSpec
from sync.transforms import email, to_e164

LIST_OPERATION = "list_operation"
MAX_CONTACTS = 1000  # the small form; larger sets go through an upload and a run
ROWS_SHOWN = 200  # rows of an operation on the page; all of them are in the CSV download
RAW_MAX = 320
CSV_PAGE = 2000
CREATE_PER_DAY = 150
OPT_IN = {"single_opt_in": "Single opt-in", "double_opt_in": "Double opt-in"}
# What each list operation is called on the page.
KINDS = {
    "sync": "Sync lists",
    "count": "Count members",
    "create": "Create list",
    "rename": "Rename list",
    "add": "Add members",
    "remove": "Remove members",
    "unsubscribe_check": "Unsubscribe: membership check",
    "unsubscribe": "Unsubscribe",
    "suppress": "Suppress",
}
# Run kinds a list's upload form can start, with the mapping kind each needs.
RUN_ACTIONS = {
    "add": ("list_membership", "list_membership"),
    "remove": ("list_membership", "list_membership_remove"),
    "subscribe": ("subscription", "subscription"),
}


class ListError(ValueError):
    """An operation that cannot start, with the reason for the operator."""


@dataclass(frozen=True)
class Contact:
    """One line of the small form: an email or phone number, normalised, or why it is not usable."""

    row: int
    raw: str
    email: str | None = None
    phone_number: str | None = None
    error: str | None = None

    @property
    def attributes(self) -> dict[str, str]:
        return {"email": self.email} if self.email else {"phone_number": self.phone_number or ""}

    def as_row(self, operation_id: int) -> ListOperationRow:
        return ListOperationRow(
            operation_id=operation_id,
            row=self.row,
            raw=self.raw[:RAW_MAX],
            email=self.email,
            phone_number=self.phone_number,
            error=self.error,
        )


def parse_contacts(text: str, region: str = "US") -> list[Contact]:
    """Emails and phone numbers, one per line or separated by commas/semicolons; phones become E.164."""
    parts = [p.strip() for p in re.split(r"[\n,;]+", text or "") if p.strip()]
    if len(parts) > MAX_CONTACTS:
        raise ListError(f"At most {MAX_CONTACTS:,} at a time here; upload a CSV for more.")
    return contacts_from(enumerate(parts, start=1), region)


def contacts_from(values: Iterable[tuple[int, str]], region: str = "US") -> list[Contact]:
    """(row, text) pairs as contacts: emails checked, phones normalised to E.164, or the reason not."""
    contacts: list[Contact] = []
    for row, raw in values:
        try:
            if "@" in raw:
                contacts.append(Contact(row, raw, email=email(raw)))
            else:
                contacts.append(Contact(row, raw, phone_number=to_e164(raw, region)))
        except RuleError as exc:
            contacts.append(Contact(row, raw, error=str(exc)))
    return contacts


# -- the synced table ----------------------------------------------------------------------------


async def all_lists(db: AsyncSession) -> list[KlaviyoList]:
    return list((await db.exec(select(KlaviyoList).order_by(col(KlaviyoList.name)))).all())


async def get_list(db: AsyncSession, klaviyo_id: str) -> KlaviyoList | None:
    return (await db.exec(select(KlaviyoList).where(KlaviyoList.klaviyo_id == klaviyo_id))).first()


# -- operations ----------------------------------------------------------------------------------


async def start_operation(
    db: AsyncSession,
    arq: ArqRedis,
    queue_name: str,
    kind: str,
    *,
    user: User | None,
    list_id: str | None = None,
    params: dict[str, Any] | None = None,
    contacts: list[Contact] | None = None,
    total: int = 0,
) -> ListOperation:
    """Record the operation (queued) with its contacts, commit, and enqueue the worker job for it."""
    operation = ListOperation(
        kind=kind,
        list_id=list_id,
        params=params or {},
        total=len(contacts) if contacts else total,
        created_by=user.id if user else None,
    )
    db.add(operation)
    await db.flush()
    assert operation.id is not None
    db.add_all(c.as_row(operation.id) for c in contacts or [])
    await db.commit()
    await enqueue(arq, queue_name, operation)
    return operation


async def enqueue(arq: ArqRedis, queue_name: str, operation: ListOperation) -> None:
    await arq.enqueue_job(
        LIST_OPERATION,
        operation.id,
        operation.kind,
        _job_id=f"{queue_name}:list-op:{operation.id}:{operation.kind}",
        _queue_name=queue_name,
    )


async def active_sync(db: AsyncSession) -> ListOperation | None:
    """A list sync already queued or running (a second click does not start another)."""
    query = select(ListOperation).where(
        ListOperation.kind == "sync",
        col(ListOperation.status).in_(ListOpStatus.active_states()),
    )
    return (await db.exec(query.order_by(col(ListOperation.id).desc()))).first()


async def latest_sync(db: AsyncSession) -> ListOperation | None:
    query = select(ListOperation).where(ListOperation.kind == "sync")
    return (await db.exec(query.order_by(col(ListOperation.id).desc()).limit(1))).first()


async def operations(db: AsyncSession, list_id: str | None, limit: int = 20) -> list[ListOperation]:
    """Recent operations on one list (or on none: sync, create), newest first."""
    query = select(ListOperation).order_by(col(ListOperation.id).desc()).limit(limit)
    query = query.where(ListOperation.list_id == list_id) if list_id else query
    return list((await db.exec(query)).all())


async def operation_rows(db: AsyncSession, op_id: int, limit: int = ROWS_SHOWN) -> list[ListOperationRow]:
    """The first rows of an operation, in row order (what the page shows)."""
    query = select(ListOperationRow).where(ListOperationRow.operation_id == op_id)
    return list((await db.exec(query.order_by(col(ListOperationRow.row)).limit(limit))).all())


async def rows_of(db: AsyncSession, ops: Iterable[ListOperation]) -> dict[int, list[ListOperationRow]]:
    return {op.id: await operation_rows(db, op.id) for op in ops if op.id is not None and op.total}


def csv_line(cells: Iterable[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow([neutralise(c) for c in cells])
    return buffer.getvalue()


ROWS_HEADER = ["row", "input", "email", "phone_number", "profile_id", "in_list", "outcome", "error"]


async def rows_csv(sessionmaker: async_sessionmaker[AsyncSession], op_id: int) -> AsyncIterator[str]:
    """Every row of an operation as CSV, a page at a time (keyset on the row number)."""
    yield "\ufeff" + csv_line(ROWS_HEADER)
    after = 0
    while True:
        query = select(ListOperationRow).where(
            ListOperationRow.operation_id == op_id, col(ListOperationRow.row) > after
        )
        # A short session per page: the download may take longer than any one request should hold one.
        async with sessionmaker() as db:
            rows = (await db.exec(query.order_by(col(ListOperationRow.row)).limit(CSV_PAGE))).all()
        if not rows:
            return
        yield "".join(
            csv_line(
                [
                    r.row,
                    r.raw,
                    r.email,
                    r.phone_number,
                    r.profile_id,
                    {"list": "yes", "global": "no"}.get(r.scope or "", ""),
                    r.status,
                    r.error,
                ]
            )
            for r in rows
        )
        after = rows[-1].row


async def count_rows(db: AsyncSession, op_id: int, *conditions: Any) -> int:
    query = select(func.count()).select_from(ListOperationRow).where(ListOperationRow.operation_id == op_id)
    return int((await db.exec(query.where(*conditions))).one())


async def confirm_unsubscribe(
    db: AsyncSession, arq: ArqRedis, queue_name: str, check: ListOperation, scope: str, user: User | None
) -> ListOperation:
    """Start the unsubscribe the check prepared: ``members`` (only list members) or ``all`` (the rest
    are unsubscribed globally, which the operator confirmed)."""
    if check.kind != "unsubscribe_check" or check.status != ListOpStatus.NEEDS_CONFIRMATION:
        raise ListError("This membership check is not waiting for a confirmation.")
    if scope not in ("members", "all"):
        raise ListError("Choose whether to unsubscribe only the list's members or everyone.")
    assert check.id is not None
    chosen: list[ColumnElement[bool]] = [col(ListOperationRow.error).is_(None)]
    if scope == "members":
        chosen.append(col(ListOperationRow.scope) == "list")
    total = await count_rows(db, check.id, *chosen)
    if not total:
        raise ListError("Nobody left to unsubscribe.")
    check.status = ListOpStatus.COMPLETED
    db.add(check)
    operation = ListOperation(
        kind="unsubscribe",
        list_id=check.list_id,
        params={**check.params, "scope": scope, "check_id": check.id},
        total=total,
        created_by=user.id if user else None,
    )
    db.add(operation)
    await db.flush()
    # The checked rows are copied in one statement, whatever their number.
    copied = ("row", "raw", "email", "phone_number", "profile_id", "scope")
    source = sa_select(literal(operation.id), *(getattr(ListOperationRow, name) for name in copied)).where(
        col(ListOperationRow.operation_id) == check.id, *chosen
    )
    await db.exec(insert(ListOperationRow).from_select(["operation_id", *copied], source))
    await db.commit()
    await enqueue(arq, queue_name, operation)
    return operation


# -- runs of an upload into a list -----------------------------------------------------------------


async def run_choices(db: AsyncSession) -> tuple[list[Upload], list[tuple[Mapping, MappingSpec]]]:
    """Ready uploads (newest first) and the list membership / subscription mappings with their specs."""
    uploads = (
        await db.exec(
            select(Upload)
            .where(Upload.status == UploadStatus.READY)
            .order_by(col(Upload.id).desc())
            .limit(50)
        )
    ).all()
    found = (
        await db.exec(
            select(Mapping, MappingVersion)
            .join(
                MappingVersion,
                (col(MappingVersion.mapping_id) == col(Mapping.id))
                & (col(MappingVersion.version) == col(Mapping.current_version)),
            )
            .where(
                col(Mapping.target_kind).in_(["list_membership", "subscription"]),
                col(Mapping.deleted).is_(False),
            )
            .order_by(col(Mapping.name))
        )
    ).all()
    return list(uploads), [(m, MappingSpec.model_validate(v.spec)) for m, v in found]


async def start_list_run(
    db: AsyncSession,
    *,
    klist: KlaviyoList | None,
    action: str,
    upload_id: int,
    mapping_id: int,
    custom_source: str | None,
    dry_run: bool,
    user: User | None,
) -> SyncRun:
    """A run of an upload through a list membership or subscription mapping, into ``klist``
    (None: a subscription to the account's default, without a list)."""
    if action not in RUN_ACTIONS:
        raise ListError(f"Unknown action {action!r}.")
    mapping_kind, run_kind = RUN_ACTIONS[action]
    mapping = await db.get(Mapping, mapping_id)
    if mapping is None or mapping.target_kind != mapping_kind:
        raise ListError(f"Choose a {mapping_kind.replace('_', ' ')} mapping for this.")
    if klist is None and action != "subscribe":
        raise ListError("Membership changes need a list.")
    try:
        run = await runs.create_run(
            db,
            upload_id=upload_id,
            mapping_id=mapping_id,
            dry_run=dry_run,
            backfill=True,
            user=user,
            list_id=klist.klaviyo_id if klist else None,
        )
    except runs.RunError as exc:
        raise ListError(str(exc)) from exc
    run.kind = run_kind
    # Without a chosen list, create_run recorded the mapping's own (where the requests go), if any.
    chosen = {"list_id": klist.klaviyo_id, "list_name": klist.name} if klist else {}
    run.options = {
        **run.options,
        **chosen,
        "custom_source": (custom_source or "").strip()[:200] or None,
    }
    db.add(run)
    await db.flush()
    return run
