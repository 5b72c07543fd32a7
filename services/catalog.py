"""Incremental catalog sync: the stored state of what Klaviyo holds, and the checks built on it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import delete, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import Account, CatalogState, RowError, SyncRun
from models.base import utcnow
from services.accounts import get_account
from sync.mapping import Mapping as MappingSpec
from sync.targets.catalog import ENTRY_TYPES, CatalogSync, Known

CATALOG_KINDS = {
    "catalog_item": "catalog-item",
    "catalog_variant": "catalog-variant",
    "catalog_category": "catalog-category",
}
DEFAULT_CATALOG = "$custom:::$default"
# How the run page names what a sync did with each entry.
ACTIONS = ("created", "updated", "deleted")


def account_scope(account: Account) -> str:
    """The Klaviyo account catalog state belongs to (its id, once a connection test learned it)."""
    return account.klaviyo_account_id or f"account-{account.id}"


def syncs(run: SyncRun, spec: MappingSpec) -> bool:
    """Whether a catalog run decides per entry (create, update or skip) rather than create or update all.

    A mapping in "update" mode stays an explicit update of every row; so does a run started with
    incremental sync turned off (then the mapping's create mode sends every row).
    """
    return (
        run.kind in CATALOG_KINDS
        and spec.options.catalog_mode == "create"
        and bool(run.options.get("catalog_sync", True))
    )


def deletes_missing(run: SyncRun) -> str | None:
    """Why entries gone from the source are not deleted this run, or None when they are."""
    if not run.options.get("delete_missing"):
        return "not enabled for this run"
    if run.only_rows is not None:
        return "a retry of failed rows sees only those rows"
    return None


async def load_sync(db: AsyncSession, run: SyncRun) -> tuple[str, CatalogSync]:
    """The account scope and a CatalogSync loaded with every entry of the run's kind."""
    account = await get_account(db)
    # The sandbox account row is made on first use: keep it, or the next sync gets another scope.
    await db.commit()
    scope = account_scope(account)
    item_type = CATALOG_KINDS[run.kind]
    query = sa.select(
        CatalogState.external_id,
        CatalogState.content_hash,
        CatalogState.klaviyo_id,
        CatalogState.last_action,
        CatalogState.last_run_id,
    ).where(
        CatalogState.account == scope,
        CatalogState.catalog == DEFAULT_CATALOG,
        CatalogState.entry_type == ENTRY_TYPES[item_type],
    )
    known = {
        external_id: Known(digest, klaviyo_id, action == "deleted", run_id)
        for external_id, digest, klaviyo_id, action, run_id in (await db.exec(query)).all()  # type: ignore[call-overload]
    }
    return scope, CatalogSync(item_type, known, run.id or 0)


@dataclass(frozen=True)
class Settled:
    """One entry Klaviyo accepted: what to remember of it."""

    external_id: str
    content_hash: str
    klaviyo_id: str
    action: str  # created | updated | deleted


async def record_settled(
    db: AsyncSession, scope: str, entry_type: str, run_id: int, entries: Iterable[Settled]
) -> None:
    """Store (replace) the state of entries Klaviyo accepted; the caller commits."""
    rows = {e.external_id: e for e in entries}
    if not rows:
        return
    where = (
        col(CatalogState.account) == scope,
        col(CatalogState.catalog) == DEFAULT_CATALOG,
        col(CatalogState.entry_type) == entry_type,
    )
    # Delete then insert: portable across PostgreSQL and SQLite, and one run owns these ids.
    await db.exec(delete(CatalogState).where(*where, col(CatalogState.external_id).in_(list(rows))))  # type: ignore[call-overload]
    now = utcnow()
    db.add_all(
        CatalogState(
            account=scope,
            entry_type=entry_type,
            external_id=e.external_id,
            content_hash=e.content_hash,
            klaviyo_id=e.klaviyo_id,
            last_action=e.action,
            last_run_id=run_id,
            updated_at=now,
        )
        for e in rows.values()
    )


async def run_counts(db: AsyncSession, run_id: int) -> dict[str, int]:
    """Entries a run created, updated and deleted (those Klaviyo accepted), from the state table."""
    query = (
        select(CatalogState.last_action, func.count())
        .where(CatalogState.last_run_id == run_id)
        .group_by(CatalogState.last_action)
    )
    found = dict((await db.exec(query)).all())
    return {action: int(found.get(action, 0)) for action in ACTIONS}


async def outcome(db: AsyncSession, run: SyncRun) -> dict[str, Any] | None:
    """What the run page shows for a catalog sync: created / updated / unchanged / deleted / refused.

    Created, updated and deleted come from the state table (what Klaviyo accepted so far); the
    unchanged count and, for a dry run, the planned counts are in the summary once the run ends.
    """
    if run.kind not in CATALOG_KINDS or not run.options.get("catalog_sync"):
        return None
    plan = run.summary.get("catalog") or {}
    if run.dry_run:
        planned = plan.get("planned", {})
        counts = {"created": planned.get("create", 0), "updated": planned.get("update", 0),
                  "deleted": planned.get("delete", 0)}  # fmt: skip
    else:
        counts = await run_counts(db, run.id or 0)
    return {**counts, "unchanged": plan.get("unchanged", 0), "refused": run.rows_failed,
            "delete_skipped": plan.get("delete_skipped")}  # fmt: skip


async def has_source_errors(db: AsyncSession, run_id: int) -> bool:
    """Whether some row failed to read or map (its entry may be missing from the source for that alone)."""
    query = (
        select(RowError.id)
        .where(
            RowError.run_id == run_id,
            RowError.severity == "error",
            col(RowError.stage).in_(("source", "mapping")),
            RowError.rule != "duplicate_external_id",
        )
        .limit(1)
    )
    return (await db.exec(query)).first() is not None
