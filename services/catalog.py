"""Incremental catalog sync: the stored state of what Klaviyo holds, and the checks built on it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import delete, func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import Account, CatalogState, MappingVersion, RowError, SyncRun
from models.base import utcnow
from services.accounts import get_account
from sync.issues import Issue, warning
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
    """The Klaviyo account catalog state belongs to: its id, else a placeholder until the id is learned."""
    return account.klaviyo_account_id or placeholder_scope(account)


def placeholder_scope(account: Account) -> str:
    """Where state goes while the key's Klaviyo account is unknown (a sync learns it first when it can)."""
    return f"account-{account.id}"


async def learn_account_id(db: AsyncSession, account: Account, klaviyo_id: str | None) -> int:
    """Record the Klaviyo account the stored key opens; state kept under the placeholder moves to it.

    Only the key in use can have written placeholder state (a new key clears it, see
    ``forget_unattributed``), so it belongs to this account. Returns the entries moved; the caller commits.
    """
    if not klaviyo_id or account.klaviyo_account_id == klaviyo_id:
        return 0
    account.klaviyo_account_id = klaviyo_id
    db.add(account)
    return await move_scope(db, placeholder_scope(account), klaviyo_id)


async def move_scope(db: AsyncSession, old: str, new: str) -> int:
    """Re-key entries from one scope to another; an entry the new scope already has keeps its own
    (newer) state. Returns the entries moved; the caller commits."""
    newer = sa.alias(CatalogState.__table__, "newer")  # type: ignore[attr-defined]
    held = (
        sa.select(sa.literal(1))
        .select_from(newer)
        .where(
            newer.c.account == new,
            newer.c.catalog == CatalogState.catalog,
            newer.c.entry_type == CatalogState.entry_type,
            newer.c.external_id == CatalogState.external_id,
        )
        .exists()
    )
    await db.exec(delete(CatalogState).where(col(CatalogState.account) == old, held))
    moved = await db.exec(update(CatalogState).where(col(CatalogState.account) == old).values(account=new))
    return int(moved.rowcount or 0)


async def forget_unattributed(db: AsyncSession, account: Account) -> None:
    """Drop state kept under the placeholder when the key changes: nobody knows which Klaviyo
    account it was sent to, and a key for another account must start from fresh state."""
    await db.exec(delete(CatalogState).where(col(CatalogState.account) == placeholder_scope(account)))


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
    # SQLModel types these attributes as plain values, which SQLAlchemy's select() overloads refuse.
    query = sa.select(  # type: ignore[call-overload]
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
        for external_id, digest, klaviyo_id, action, run_id in (await db.exec(query)).all()
    }
    # Only entries sent through this run's mapping count as gone from its source.
    same_mapping = (
        select(SyncRun.id)
        .join(MappingVersion, col(SyncRun.mapping_version_id) == col(MappingVersion.id))
        .where(
            MappingVersion.mapping_id
            == select(MappingVersion.mapping_id)
            .where(MappingVersion.id == run.mapping_version_id)
            .scalar_subquery()
        )
    )
    sources = {run_id for run_id in (await db.exec(same_mapping)).all() if run_id is not None}
    return scope, CatalogSync(item_type, known, run.id or 0, sources)


@dataclass(frozen=True)
class Settled:
    """One entry Klaviyo accepted: what to remember of it."""

    external_id: str
    content_hash: str
    klaviyo_id: str
    action: str  # created | updated | deleted
    parent: str | None = None  # a variant's item external id


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
    await db.exec(delete(CatalogState).where(*where, col(CatalogState.external_id).in_(list(rows))))
    now = utcnow()
    db.add_all(
        CatalogState(
            account=scope,
            entry_type=entry_type,
            external_id=e.external_id,
            content_hash=e.content_hash,
            klaviyo_id=e.klaviyo_id,
            parent_external_id=e.parent,
            last_action=e.action,
            last_run_id=run_id,
            updated_at=now,
        )
        for e in rows.values()
    )
    deleted = [e.external_id for e in rows.values() if e.action == "deleted"]
    if entry_type == "item" and deleted:
        # Klaviyo deleted these items' variants with them: the next variant sync creates them again.
        await db.exec(
            update(CatalogState)
            .where(
                col(CatalogState.account) == scope,
                col(CatalogState.catalog) == DEFAULT_CATALOG,
                col(CatalogState.entry_type) == "variant",
                col(CatalogState.parent_external_id).in_(deleted),
            )
            .values(last_action="deleted", content_hash="", updated_at=now)
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


# Recommendations join Ordered Product / Placed Order events to catalog items on this property.
PRODUCT_ID = "productid"
RECOMMENDATION_METRICS = ("Ordered Product", "Placed Order")


def _product_ids(value: Any, found: list[Any], depth: int = 0) -> None:
    """Every ProductID value inside an item's events (Items[] of a Placed Order included)."""
    if depth > 12:
        return
    if isinstance(value, dict):
        for key, inner in value.items():
            if key.lower() == PRODUCT_ID and not isinstance(inner, dict | list):
                found.append(inner)
            else:
                _product_ids(inner, found, depth + 1)
    elif isinstance(value, list):
        for inner in value:
            _product_ids(inner, found, depth + 1)


def _sends_recommendation_metric(spec: MappingSpec) -> bool:
    kind = spec.target.kind.value
    if kind == "order":
        return True  # Placed Order, and Ordered Product per line
    return kind == "event" and spec.target.metric in RECOMMENDATION_METRICS


async def product_id_issues(db: AsyncSession, spec: MappingSpec, items: Iterable[Any]) -> list[Issue]:
    """Warnings when the mapped product id of Ordered Product / Placed Order events cannot match the
    synced catalog: a number where external ids are strings, or values no synced item has."""
    if not _sends_recommendation_metric(spec):
        return []
    values: list[Any] = []
    for item in items:
        _product_ids(item, values)
    issues: list[Issue] = []
    numeric = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    casts = [r.target for r in spec.fields if r.target.rsplit(".", 1)[-1].lower() == PRODUCT_ID and any(
        getattr(t, "op", "") in ("number", "integer") for t in r.transforms)]  # fmt: skip
    if numeric or casts:
        example = numeric[0] if numeric else "a number"
        issues.append(
            warning(
                "product_id_type",
                f"ProductID is sent as a number ({example}) but catalog external ids are strings: "
                "recommendations match on type and value, so send it as text",
                casts[0] if casts else None,
            )
        )
    scope = account_scope(await get_account(db))
    base = select(CatalogState.external_id).where(
        CatalogState.account == scope,
        CatalogState.entry_type == "item",
        CatalogState.last_action != "deleted",
    )
    synced = (await db.exec(base.limit(1))).first()
    if synced is None:
        return issues  # no catalog synced from here: nothing to compare values with
    if not values:
        issues.append(
            warning(
                "product_id_missing",
                f"no ProductID property is mapped: recommendations cannot link these orders to the "
                f"synced catalog (its item external ids look like {synced!r})",
            )
        )
        return issues
    wanted = sorted({str(v) for v in values})[:200]
    known = set((await db.exec(base.where(col(CatalogState.external_id).in_(wanted)))).all())
    unknown = [v for v in wanted if v not in known]
    if unknown:
        issues.append(
            warning(
                "product_id_not_in_catalog",
                f"{len(unknown)} of {len(wanted)} ProductID values in the sample (e.g. {unknown[0]!r}) "
                f"are not external ids of synced catalog items (e.g. {synced!r}): map the column the "
                "catalog uses",
            )
        )
    return issues
