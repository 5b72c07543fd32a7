"""Rows Klaviyo accepts but will not keep (reserved @example.com addresses): the run's headline says
how many, next to "accepted". Real PostgreSQL, Redis, worker, web app and simulator."""

from __future__ import annotations

import uuid

import httpx

from models import Role, RunStatus
from tests.support.env import unique
from tests.support.runs import csv_text, make_mapping, make_upload, run_to_end
from tests.support.sandbox import sim_list
from tests.support.specs import profile_spec


async def test_example_addresses_are_counted_as_accepted_but_not_stored(
    run_settings,
    klaviyo,
    sessionmaker,
    tmp_path,
    run_worker_burst,
    simulator_url,
    client,
    as_role,
):
    tag = uuid.uuid4().hex[:8]
    list_id = await klaviyo.create_list(unique("Test domain "))
    emails = [f"buyer{n}-{tag}@example.com" for n in range(4)] + [f"real-{tag}@shop.test"]
    rows = [
        {"email": e, "phone": "", "customer_id": f"C{n}-{tag}", "first": "Ann", "title": "", "city": "Oslo",
         "tier": "gold"}
        for n, e in enumerate(emails)
    ]  # fmt: skip
    rows.append({**rows[0], "email": "not-an-email", "customer_id": f"bad-{tag}"})  # fails: not counted
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "profiles.csv")
    mapping = await make_mapping(sessionmaker, profile_spec(unique("test domain profiles ")))

    settings = run_settings
    dry = await run_to_end(
        sessionmaker, run_worker_burst, settings, upload, mapping, dry_run=True, list_id=list_id
    )
    run = await run_to_end(sessionmaker, run_worker_burst, settings, upload, mapping, list_id=list_id)
    assert run.status == RunStatus.COMPLETED, run.error_message
    assert (run.items_sent, run.rows_failed) == (5, 1)

    # Klaviyo took all five but keeps one: the list holds the real address only.
    stored = httpx.get(f"{simulator_url}/__sim/profiles").json()["data"]
    ours = {p["email"]: p["id"] for p in stored if tag in (p.get("email") or "")}
    assert set(ours) == {f"real-{tag}@shop.test"}
    assert set(sim_list(simulator_url, list_id)["members"]) == set(ours.values())

    await as_role(Role.VIEWER)
    page = (await client.get(f"/runs/{run.id}")).text
    assert "Finished: 5 profiles accepted by Klaviyo from 6 rows; 1 row failed." in page
    assert "Accepted but Klaviyo will not store 4 profiles" in page
    dry_page = (await client.get(f"/runs/{dry.id}")).text
    assert "Klaviyo would accept but not store 4 profiles" in dry_page
