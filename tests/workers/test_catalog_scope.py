"""Catalog sync state belongs to the Klaviyo account it was sent to: a connection test never orphans
it, and a key for another account starts fresh. Real PostgreSQL, Redis, worker, web app and simulator."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlmodel import col, select

from models import CatalogState, Role, RunStatus, SyncRun
from services import catalog
from services.accounts import get_account
from tests.support.env import unique
from tests.support.runs import csv_text, make_mapping, make_upload
from tests.support.runs import run_to_end as _sync
from tests.support.sandbox import catalog_rows
from tests.support.specs import item_spec
from tests.support.web import post_form

OTHER_KEY = "pk_other_account_00000000000000000000"


def _items(simulator_url: str, tag: str, account: str | None = None) -> set[str]:
    params = {"account": account} if account else {}
    found = httpx.get(f"{simulator_url}/__sim/catalog", params=params).json()["items"]
    return {i["external_id"] for i in found if tag in i["id"]}


async def test_connection_test_keeps_the_sync_state_and_another_account_starts_fresh(
    run_settings,
    sessionmaker,
    tmp_path,
    run_worker_burst,
    simulator_url,
    client,
    as_role,
):
    settings = run_settings.model_copy(update={"klaviyo_base_url": simulator_url})
    await as_role(Role.ADMIN)
    # A fresh install: the sandbox, never tested, so the console does not know the account's id.
    assert (await post_form(client, "/connection/sandbox")).status_code == 200
    async with sessionmaker() as db:
        assert (await get_account(db)).klaviyo_account_id is None

    tag = uuid.uuid4().hex[:8]
    rows = catalog_rows(tag, 40)
    mapping = await make_mapping(sessionmaker, item_spec(unique("scope items ")))

    async def sync(rows: list[dict[str, str]], **options: Any) -> SyncRun:
        upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "catalog.csv")
        done = await _sync(sessionmaker, run_worker_burst, settings, upload, mapping, **options)
        assert done.status == RunStatus.COMPLETED, done.error_message
        return done

    first = await sync(rows)
    assert first.items_sent == 40 and len(_items(simulator_url, tag)) == 40

    # The operator presses "Test connection": the console learns the account's id.
    assert (await post_form(client, "/connection/test")).status_code == 200
    await run_worker_burst(settings)
    assert "Connected to the sandbox" in (await client.get("/connection/status")).text

    # The unchanged file again: a dry run plans nothing, the send sends nothing.
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "catalog.csv")
    dry = await _sync(sessionmaker, run_worker_burst, settings, upload, mapping, dry_run=True)
    assert dry.summary["items"] == 0 and dry.summary["catalog"]["unchanged"] == 40
    again = await sync(rows)
    assert (again.requests, again.items_sent, again.rows_failed) == (0, 0, 0)
    page = await client.get(f"/runs/{again.id}")
    assert 'data-testid="catalog-unchanged">40<' in page.text
    assert 'data-testid="catalog-created">0<' in page.text

    # Delete entries the file no longer has: the old entries are found and deleted.
    fewer = await sync(rows[1:], delete_missing=True)
    assert (fewer.items_sent, (await catalog_counts(sessionmaker, fewer))["deleted"]) == (1, 1)
    assert _items(simulator_url, tag) == {r["sku"] for r in rows[1:]}

    # A key for another Klaviyo account: its catalog is empty, so every entry is created there.
    other = f"OTHER{tag}".upper()
    httpx.post(
        f"{simulator_url}/__sim/keys",
        json={"add": [{"key": OTHER_KEY, "account": {"id": other, "public_key": other[:6]}}]},
    ).raise_for_status()
    saved = await post_form(client, "/connection/key", {"private_key": OTHER_KEY})
    assert saved.status_code == 200
    try:
        fresh = await sync(rows[1:])
        assert (fresh.items_sent, fresh.rows_failed) == (39, 0)
        assert _items(simulator_url, tag, other) == {r["sku"] for r in rows[1:]}
        async with sessionmaker() as db:
            query = select(CatalogState.account).where(col(CatalogState.external_id) == rows[2]["sku"])
            scopes = set((await db.exec(query)).all())
        assert scopes == {"SBX000", other}
    finally:
        await post_form(client, "/connection/sandbox")


async def catalog_counts(sessionmaker: Any, run: SyncRun) -> dict[str, Any]:
    async with sessionmaker() as db:
        found = await catalog.outcome(db, run)
    assert found is not None
    return found


async def test_state_kept_before_the_id_was_known_moves_to_it(sessionmaker):
    """Placeholder state (a sync that could not learn the id) is adopted when the id is learned;
    an entry the account already holds keeps its own state."""
    tag = uuid.uuid4().hex[:8]
    async with sessionmaker() as db:
        account = await get_account(db)
        saved_id = account.klaviyo_account_id
        account.klaviyo_account_id = None
        placeholder = catalog.placeholder_scope(account)
        real = f"ACC{tag}"
        for scope, sku, digest in ((placeholder, "a", "old"), (placeholder, "b", "old"), (real, "b", "new")):
            entry = CatalogState(
                account=scope, entry_type="item", external_id=f"{tag}-{sku}", content_hash=digest,
                klaviyo_id=f"k-{sku}", last_action="created",
            )  # fmt: skip
            db.add(entry)
        await db.commit()
        moved = await catalog.learn_account_id(db, account, real)
        await db.commit()
        found = (
            await db.exec(select(CatalogState).where(col(CatalogState.external_id).startswith(tag)))
        ).all()
        assert moved == 1
        assert sorted((s.account, s.external_id, s.content_hash) for s in found) == [
            (real, f"{tag}-a", "old"),
            (real, f"{tag}-b", "new"),
        ]
        account.klaviyo_account_id = saved_id
        db.add(account)
        await db.commit()
