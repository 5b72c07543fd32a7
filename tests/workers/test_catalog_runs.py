"""Catalog runs end to end: items in jobs of 100 (create, then update), variants after their items,
item errors from finished jobs on their rows. Real PostgreSQL, Redis, worker and simulator."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlmodel import col, select

from models import Role, RowError, RunStatus, SyncBatch
from tests.support.env import unique
from tests.support.runs import csv_text, make_mapping, make_upload, run_to_end
from tests.support.sandbox import sim_catalog
from tests.support.specs import item_spec, variant_spec


async def test_catalog_items_then_price_update_then_variants(
    run_settings,
    sessionmaker,
    tmp_path,
    run_worker_burst,
    simulator_url,
    client,
    as_role,
):
    tag = uuid.uuid4().hex[:8]
    rows = [
        {"sku": f"{tag}-{n}", "name": f"Mug {n}", "about": "Stoneware", "link": f"https://shop.test/{n}",
         "price": f"{10 + n}.50"}
        for n in range(150)
    ]  # fmt: skip
    rows[20]["name"] = ""  # a required field missing: refused by the mapping
    rows.append(dict(rows[5]))  # the same item twice: Klaviyo refuses the second create when the job runs
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "catalog.csv")
    mapping = await make_mapping(sessionmaker, item_spec(unique("items ")))

    # Incremental sync off: the mapping's create mode sends every row.
    run = await run_to_end(sessionmaker, run_worker_burst, run_settings, upload, mapping, catalog_sync=False)

    assert run.status == RunStatus.COMPLETED, run.error_message
    assert run.items_sent == 149 and run.rows_failed == 2
    async with sessionmaker() as db:
        errors = (await db.exec(select(RowError).where(RowError.run_id == run.id))).all()
        query = select(SyncBatch).where(SyncBatch.run_id == run.id).order_by(col(SyncBatch.seq))
        batches = (await db.exec(query)).all()
    assert sorted((e.row_number, e.stage, e.rule) for e in errors) == [
        (21, "mapping", "missing_required"),
        (151, "klaviyo", "duplicate"),
    ]
    assert [(b.item_count, b.accepted, b.rejected) for b in batches] == [(100, 100, 0), (50, 49, 1)]
    items = {i["external_id"]: i for i in sim_catalog(simulator_url, tag)["items"]}
    assert len(items) == 149 and f"{tag}-20" not in items
    assert items[f"{tag}-7"]["price"] == 17.5 and items[f"{tag}-7"]["title"] == "Mug 7"
    await as_role(Role.VIEWER)
    page = await client.get(f"/runs/{run.id}")
    assert "149 catalog items accepted by Klaviyo from 151 rows" in page.text

    # An update mapping changes one price; nothing else is touched.
    changed = csv_text([{"sku": f"{tag}-7", "price": "99.00"}])
    update_upload = await make_upload(sessionmaker, tmp_path, changed, "prices.csv")
    update = await make_mapping(sessionmaker, item_spec(unique("prices "), mode="update"))
    run = await run_to_end(sessionmaker, run_worker_burst, run_settings, update_upload, update)
    assert run.status == RunStatus.COMPLETED and run.items_sent == 1 and run.rows_failed == 0
    items = {i["external_id"]: i for i in sim_catalog(simulator_url, tag)["items"]}
    assert items[f"{tag}-7"]["price"] == 99.0 and items[f"{tag}-7"]["title"] == "Mug 7"
    assert items[f"{tag}-8"]["price"] == 18.5

    # Variants after their items; a variant of an item that does not exist is refused on its row.
    variants = [{**rows[n], "vsku": f"{rows[n]['sku']}-blue", "stock": "5"} for n in (1, 2)] + [
        {**rows[3], "sku": f"{tag}-missing", "vsku": f"{tag}-missing-blue", "stock": "1"}
    ]
    variant_upload = await make_upload(sessionmaker, tmp_path, csv_text(variants), "variants.csv")
    variant_mapping = await make_mapping(sessionmaker, variant_spec(unique("variants ")))
    run = await run_to_end(sessionmaker, run_worker_burst, run_settings, variant_upload, variant_mapping)
    assert run.status == RunStatus.COMPLETED and run.items_sent == 2 and run.rows_failed == 1
    stored = {v["sku"]: v for v in sim_catalog(simulator_url, tag)["variants"]}
    assert set(stored) == {f"{tag}-1-blue", f"{tag}-2-blue"}
    assert stored[f"{tag}-1-blue"]["item_id"] == f"$custom:::$default:::{tag}-1"
    async with sessionmaker() as db:
        (error,) = (await db.exec(select(RowError).where(RowError.run_id == run.id))).all()
    assert (error.row_number, error.stage, error.rule) == (3, "klaviyo", "not_found")


@pytest.mark.parametrize("pointers", ["relative", "none"])
async def test_catalog_job_errors_land_on_their_row_without_an_item_index(
    pointers,
    run_settings,
    sessionmaker,
    tmp_path,
    run_worker_burst,
    simulator_url,
):
    # Klaviyo's catalog job errors carry no original_payload; without an index in the pointer the
    # compound id the detail names finds the row.
    httpx.post(f"{simulator_url}/__sim/config", json={"job_error_pointers": pointers}).raise_for_status()
    try:
        tag = uuid.uuid4().hex[:8]
        rows = [
            {"sku": f"{tag}-{n}", "name": f"Mug {n}", "about": "Stoneware", "link": "https://shop.test/m",
             "price": "10.50"}
            for n in range(4)
        ]  # fmt: skip
        rows.append({**rows[1], "name": "Mug 1 again"})  # row 5 repeats row 2's item: refused
        upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "catalog.csv")
        mapping = await make_mapping(sessionmaker, item_spec(unique("items ")))
        run = await run_to_end(
            sessionmaker, run_worker_burst, run_settings, upload, mapping, catalog_sync=False
        )
    finally:
        httpx.post(f"{simulator_url}/__sim/config", json={"job_error_pointers": "absolute"})
    assert run.status == RunStatus.COMPLETED, run.error_message
    async with sessionmaker() as db:
        errors = (await db.exec(select(RowError).where(RowError.run_id == run.id))).all()
    assert [(e.row_number, e.rule) for e in errors] == [(5, "duplicate")]
    assert run.items_sent == 4 and run.rows_failed == 1
    items = {i["external_id"]: i for i in sim_catalog(simulator_url, tag)["items"]}
    assert items[f"{tag}-1"]["title"] == "Mug 1"
