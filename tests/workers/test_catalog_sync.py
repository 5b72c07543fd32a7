"""Incremental catalog sync end to end: only new, changed and (when enabled) removed entries are
sent; item errors land on their rows. Real PostgreSQL, Redis, worker and simulator."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlmodel import col, select

from models import CatalogState, RowError, RunStatus, SyncRun
from tests.support.env import unique
from tests.support.runs import csv_text, make_mapping, make_upload
from tests.support.runs import run_to_end as _sync
from tests.support.sandbox import catalog_rows
from tests.support.specs import item_spec, variant_spec


def _items(simulator_url: str, tag: str) -> dict[str, dict[str, Any]]:
    everything = httpx.get(f"{simulator_url}/__sim/catalog").json()["items"]
    return {i["external_id"]: i for i in everything if tag in i["id"]}


async def _counts(sessionmaker: Any, run: SyncRun) -> dict[str, Any]:
    from services import catalog

    async with sessionmaker() as db:
        found = await catalog.outcome(db, run)
    assert found is not None
    return found


async def test_second_sync_sends_only_what_changed_and_deletes_what_is_gone(
    run_settings,
    sessionmaker,
    tmp_path,
    run_worker_burst,
    simulator_url,
):
    tag = uuid.uuid4().hex[:8]
    rows = catalog_rows(tag, 120)
    mapping = await make_mapping(sessionmaker, item_spec(unique("sync items ")))

    async def sync(rows: list[dict[str, str]], **options: Any) -> SyncRun:
        upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "catalog.csv")
        return await _sync(sessionmaker, run_worker_burst, run_settings, upload, mapping, **options)

    first = await sync(rows)
    assert first.status == RunStatus.COMPLETED, first.error_message
    assert first.items_sent == 120 and first.rows_failed == 0
    assert set(_items(simulator_url, tag)) == {r["sku"] for r in rows}
    assert await _counts(sessionmaker, first) == {
        "created": 120, "updated": 0, "deleted": 0, "unchanged": 0, "refused": 0,
        "delete_skipped": "not enabled for this run",
    }  # fmt: skip

    # Unchanged: nothing is sent at all.
    second = await sync(rows)
    assert second.status == RunStatus.COMPLETED and second.items_sent == 0 and second.requests == 0
    assert (await _counts(sessionmaker, second))["unchanged"] == 120

    # One price changes: a dry run says one update and sends nothing; the real run sends it alone.
    rows[7]["price"] = "99.00"
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "catalog.csv")
    dry = await _sync(sessionmaker, run_worker_burst, run_settings, upload, mapping, dry_run=True)
    assert dry.status == RunStatus.COMPLETED and dry.requests == 0 and dry.summary["items"] == 1
    counts = await _counts(sessionmaker, dry)
    assert (counts["updated"], counts["created"], counts["unchanged"]) == (1, 0, 119)
    assert _items(simulator_url, tag)[f"{tag}-7"]["price"] == 17.5
    third = await sync(rows)
    assert third.items_sent == 1
    counts = await _counts(sessionmaker, third)
    assert (counts["updated"], counts["created"], counts["unchanged"]) == (1, 0, 119)
    items = _items(simulator_url, tag)
    assert items[f"{tag}-7"]["price"] == 99.0 and items[f"{tag}-8"]["price"] == 18.5

    # One row gone, delete enabled: one delete.
    fourth = await sync(rows[:5] + rows[6:], delete_missing=True)
    assert fourth.status == RunStatus.COMPLETED and fourth.items_sent == 1
    counts = await _counts(sessionmaker, fourth)
    assert (counts["deleted"], counts["unchanged"], counts["delete_skipped"]) == (1, 119, None)
    assert f"{tag}-5" not in _items(simulator_url, tag) and len(_items(simulator_url, tag)) == 119
    async with sessionmaker() as db:
        gone = (await db.exec(select(CatalogState).where(CatalogState.external_id == f"{tag}-5"))).one()
    assert gone.last_action == "deleted"

    # It comes back: created again.
    fifth = await sync(rows)
    assert fifth.items_sent == 1 and (await _counts(sessionmaker, fifth))["created"] == 1


async def test_variant_errors_on_their_rows_and_retried_next_sync(
    run_settings,
    sessionmaker,
    tmp_path,
    run_worker_burst,
    simulator_url,
):
    tag = uuid.uuid4().hex[:8]
    items = catalog_rows(tag, 4)
    item_mapping = await make_mapping(sessionmaker, item_spec(unique("parents ")))
    variant_mapping = await make_mapping(sessionmaker, variant_spec(unique("variants ")))

    async def sync(mapping: Any, rows: list[dict[str, str]], **options: Any) -> SyncRun:
        upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "catalog.csv")
        return await _sync(sessionmaker, run_worker_burst, run_settings, upload, mapping, **options)

    assert (await sync(item_mapping, items[:3])).items_sent == 3

    def variant(n: int, stock: str = "5") -> dict[str, str]:
        return {**items[n], "vsku": f"{items[n]['sku']}-blue", "stock": stock}

    variants = [variant(0), variant(1), variant(3), variant(2, stock=""), variant(0)]
    # Deleting is enabled but skipped: a row that failed to map may be an entry still in the shop.
    run = await sync(variant_mapping, variants, delete_missing=True)

    assert run.status == RunStatus.COMPLETED, run.error_message
    async with sessionmaker() as db:
        query = select(RowError).where(RowError.run_id == run.id).order_by(col(RowError.row_number))
        errors = (await db.exec(query)).all()
    # Row 3's item is not in Klaviyo yet; row 4 lacks a stock; row 5 repeats row 1's id.
    assert [(e.row_number, e.stage, e.rule) for e in errors] == [
        (3, "klaviyo", "not_found"),
        (4, "mapping", "missing_required"),
        (5, "mapping", "duplicate_external_id"),
    ]
    assert errors[0].values.get("vsku") == f"{tag}-3-blue"
    counts = await _counts(sessionmaker, run)
    assert counts["created"] == 2 and counts["refused"] == 3
    assert "failed to read or map" in counts["delete_skipped"]

    # The parent arrives and the stock is fixed: exactly those two are sent; the two that landed are not.
    assert (await sync(item_mapping, items)).items_sent == 1
    variants[3]["stock"] = "2"
    again = await sync(variant_mapping, variants[:4])
    assert again.items_sent == 2 and again.rows_failed == 0
    stored = httpx.get(f"{simulator_url}/__sim/catalog").json()["variants"]
    assert sorted(v["sku"] for v in stored if tag in v["id"]) == [f"{tag}-{n}-blue" for n in range(4)]

    # Item 1 is deleted (Klaviyo takes its variant with it), then comes back: the next variant sync
    # knows the variant is gone and creates it again, alone.
    gone = await sync(item_mapping, [items[0], *items[2:]], delete_missing=True)
    assert gone.items_sent == 1 and (await _counts(sessionmaker, gone))["deleted"] == 1
    assert (await sync(item_mapping, items)).items_sent == 1
    back = await sync(variant_mapping, variants[:4])
    assert back.items_sent == 1 and (await _counts(sessionmaker, back))["created"] == 1
    stored = httpx.get(f"{simulator_url}/__sim/catalog").json()["variants"]
    assert sorted(v["sku"] for v in stored if tag in v["id"]) == [f"{tag}-{n}-blue" for n in range(4)]


async def test_entries_already_in_klaviyo_are_adopted_by_update(
    run_settings,
    sessionmaker,
    tmp_path,
    run_worker_burst,
    simulator_url,
):
    tag = uuid.uuid4().hex[:8]
    rows = catalog_rows(tag, 10)
    mapping = await make_mapping(sessionmaker, item_spec(unique("adopt ")))
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "catalog.csv")
    # A plain create run (no sync state) puts the items in Klaviyo.
    plain = await _sync(sessionmaker, run_worker_burst, run_settings, upload, mapping, catalog_sync=False)
    assert plain.items_sent == 10
    rows[0]["price"] = "1.00"
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "catalog.csv")
    run = await _sync(sessionmaker, run_worker_burst, run_settings, upload, mapping)
    assert run.status == RunStatus.COMPLETED and run.rows_failed == 0 and run.items_sent == 10
    counts = await _counts(sessionmaker, run)
    assert (counts["created"], counts["updated"]) == (0, 10)
    assert _items(simulator_url, tag)[f"{tag}-0"]["price"] == 1.0
