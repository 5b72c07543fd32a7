"""Profile runs end to end: CSV -> bulk import jobs -> simulator, with lists, import errors and clearing.

Real pieces only: PostgreSQL, Redis, an in-process arq worker, and the simulator over HTTP.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from sqlmodel import select

from klaviyo.client import KlaviyoClient
from models import RowError, RunStatus, SyncBatch, SyncRun
from services import runs
from services.accounts import get_account
from tests.support.env import unique
from tests.support.runs import csv_text, make_mapping, make_upload, run_to_end
from tests.support.sandbox import sim_list
from tests.support.specs import profile_spec


def _profile(simulator_url: str, email: str) -> dict[str, Any] | None:
    found = httpx.get(f"{simulator_url}/__sim/profiles", params={"email": email}).json()["data"]
    assert len(found) <= 1
    return found[0] if found else None


async def test_profiles_land_in_the_list_and_import_errors_hit_their_rows(
    run_settings, klaviyo, sessionmaker, tmp_path, run_worker_burst, simulator_url
):
    tag = uuid.uuid4().hex[:8]
    mail = {n: f"p{n}-{tag}@shop.test" for n in range(1, 8)}
    # Two profiles already in the account: row 4 names the second by email but the first's external id.
    owner = await klaviyo.import_profile({"email": f"owner-{tag}@shop.test", "external_id": f"X-{tag}"})
    await klaviyo.import_profile({"email": mail[4], "first_name": "Dora"})
    list_id = await klaviyo.create_list(unique("VIPs "))

    def row(n: int, **cells: str) -> dict[str, str]:
        base = {"email": mail[n], "phone": "", "customer_id": f"C{n}-{tag}", "first": f"F{n}"}
        return {**base, "title": "", "city": "Oslo", "tier": "gold", **cells}

    rows = [
        row(1, phone="+47 912 34 567"),
        row(2),
        row(3, email="not-an-email"),  # refused by the mapping: never sent
        row(4, customer_id=f"X-{tag}"),  # refused by Klaviyo when the job runs (duplicate identifier)
        row(5, phone="12345"),  # invalid phone: sent without it, with a warning on the row
        row(6, customer_id="x" * 65),  # Klaviyo would truncate it: refused by the mapping
        row(7),
    ]
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "profiles.csv")
    mapping = await make_mapping(sessionmaker, profile_spec(unique("profiles "), drop_invalid_phone=True))

    run = await run_to_end(sessionmaker, run_worker_burst, run_settings, upload, mapping, list_id=list_id)

    assert run.status == RunStatus.COMPLETED, run.error_message
    assert run.options["list_id"] == list_id
    assert run.items_sent == 4  # rows 1, 2, 5, 7: the refused row 4 is not counted as sent
    assert run.rows_failed == 3 and run.rows_read == 7
    async with sessionmaker() as db:
        errors = (await db.exec(select(RowError).where(RowError.run_id == run.id))).all()
        batches = (await db.exec(select(SyncBatch).where(SyncBatch.run_id == run.id))).all()
    found = sorted((e.row_number, e.severity, e.stage, e.rule, e.column) for e in errors)
    assert found == [
        (3, "error", "mapping", "invalid_email", "email"),
        (4, "error", "klaviyo", "duplicate_profile", "external_id"),
        (5, "warning", "mapping", "phone_dropped", "phone"),
        (6, "error", "mapping", "external_id_too_long", "external_id"),
    ]
    klaviyo_error = next(e for e in errors if e.stage == "klaviyo")
    assert klaviyo_error.values["email"] == mail[4] and klaviyo_error.batch_id == batches[0].id
    assert [(b.status, b.item_count, b.accepted, b.rejected) for b in batches] == [("sent", 5, 4, 1)]
    assert batches[0].job_id

    # Exactly the expected profiles landed, with what the rows said.
    landed = {n: _profile(simulator_url, mail[n]) for n in mail}
    assert landed[3] is None and landed[6] is None
    assert landed[1]["phone_number"] == "+4791234567" and landed[1]["external_id"] == f"C1-{tag}"
    assert landed[1]["first_name"] == "F1" and landed[1]["location"] == {"city": "Oslo"}
    assert landed[1]["properties"] == {"Tier": "gold"}
    assert "phone_number" not in landed[5] and landed[5]["first_name"] == "F5"
    assert landed[4]["first_name"] == "Dora" and "external_id" not in landed[4]  # refused: untouched
    members = set(sim_list(simulator_url, list_id)["members"])
    assert members == {landed[n]["id"] for n in (1, 2, 5, 7)}
    assert owner not in members


async def test_empty_cells_leave_fields_unless_the_mapping_clears_them(
    run_settings, klaviyo, sessionmaker, tmp_path, run_worker_burst, simulator_url
):
    email = f"clear-{uuid.uuid4().hex[:8]}@shop.test"
    await klaviyo.import_profile({"email": email, "first_name": "Old", "title": "Boss"})
    cells = {"phone": "", "customer_id": "", "first": "", "title": "", "city": "Rome", "tier": ""}
    text = csv_text([{"email": email, **cells}])
    upload = await make_upload(sessionmaker, tmp_path, text, "profiles.csv")

    keep = await make_mapping(sessionmaker, profile_spec(unique("keep ")))
    run = await run_to_end(sessionmaker, run_worker_burst, run_settings, upload, keep)
    assert run.status == RunStatus.COMPLETED and run.items_sent == 1
    stored = _profile(simulator_url, email)
    assert stored["first_name"] == "Old" and stored["title"] == "Boss"
    assert stored["location"] == {"city": "Rome"}

    clear = await make_mapping(sessionmaker, profile_spec(unique("clear "), clear_empty=True))
    run = await run_to_end(sessionmaker, run_worker_burst, run_settings, upload, clear)
    assert run.status == RunStatus.COMPLETED and run.items_sent == 1
    stored = _profile(simulator_url, email)
    assert "first_name" not in stored and "title" not in stored
    assert stored["email"] == email and stored["location"] == {"city": "Rome"}  # identifiers never cleared


async def test_external_id_only_mapping_is_flagged_in_the_dry_run(
    run_settings, sessionmaker, tmp_path, run_worker_burst, simulator_url, client, as_role
):
    from models import Role

    tag = uuid.uuid4().hex[:8]
    rows = [
        {"customer_id": f"E{n}-{tag}", "first": "A", "title": "", "city": "", "tier": ""} for n in range(3)
    ]
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "profiles.csv")
    mapping = await make_mapping(sessionmaker, profile_spec(unique("ext only "), external_id_only=True))

    run = await run_to_end(sessionmaker, run_worker_burst, run_settings, upload, mapping, dry_run=True)

    assert run.status == RunStatus.COMPLETED and run.summary["items"] == 3
    assert run.summary["requests_needed"] == 1
    assert [i["rule"] for i in run.summary["mapping_issues"]] == ["external_id_only"]
    all_profiles = httpx.get(f"{simulator_url}/__sim/profiles").json()["data"]
    assert not any(p.get("external_id", "").endswith(tag) for p in all_profiles)  # nothing sent
    await as_role(Role.VIEWER)
    page = await client.get(f"/runs/{run.id}")
    assert "3 profiles in 1 request would be sent" in page.text
    assert "external_id_only" in page.text and "second, permanent duplicate" in page.text


async def test_worker_killed_while_jobs_settle_then_resumed(pg_url, sessionmaker, tmp_path):
    """Import jobs take a while; the worker dies with batches still settling. The next worker resends
    exactly those batches (profile upserts are safe to repeat) and the ledger ends exact."""
    import asyncio
    import collections
    import os
    import signal
    import subprocess
    import sys
    import time

    from sqlalchemy import func

    from models import BatchStatus
    from simulator.server import SimulatorProcess
    from tests.support.env import REDIS_URL, ROOT

    total = 30_000
    tag = uuid.uuid4().hex[:6]
    rows = [
        {"email": f"k{n}-{tag}@shop.test", "phone": "", "customer_id": "", "first": f"K{n}", "title": "",
         "city": "", "tier": ""}
        for n in range(total)
    ]  # fmt: skip
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "profiles.csv")
    mapping = await make_mapping(sessionmaker, profile_spec(unique("resume ")))
    async with sessionmaker() as db:
        (await get_account(db)).sandbox = True
        run = await runs.create_run(
            db, upload_id=upload.id, mapping_id=mapping.id, dry_run=False, backfill=True, user=None
        )
        await db.commit()
    queue = f"arq:profiles:{tag}"
    with SimulatorProcess(time_scale=20) as sim:
        sim.configure(job_processing_seconds=30.0)  # 1.5 s of real time per job
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": pg_url,
            "REDIS_URL": REDIS_URL,
            "SANDBOX_URL": sim.base_url,
            "QUEUE_NAME": queue,
            "KLAVIYO_TIME_SCALE": "20",
            "RUN_LEASE_SECONDS": "2",
            "UPLOAD_DIR": str(tmp_path),
        }

        def worker() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "workers"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

        async def count(*where: Any) -> int:
            async with sessionmaker() as db:
                query = select(func.count()).select_from(SyncBatch).where(SyncBatch.run_id == run.id, *where)
                return int((await db.exec(query)).one())

        async def wait(predicate: Any, timeout: float, what: str) -> None:
            deadline = time.monotonic() + timeout
            while not await predicate():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.1)

        arq = ArqRedis.from_url(REDIS_URL)
        await runs.enqueue(arq, queue, run, "start")
        first = worker()
        try:

            async def posted() -> bool:
                stats = httpx.get(f"{sim.base_url}/__sim/stats").json()["requests"]
                return sum(stats.get("POST /api/profile-bulk-import-jobs", {}).values()) >= 2

            await wait(posted, 60, "two import jobs created")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        assert await count(SyncBatch.status == BatchStatus.IN_FLIGHT) >= 2  # killed while settling
        second = worker()
        try:

            async def finished() -> bool:
                async with sessionmaker() as db:
                    current = await db.get(SyncRun, run.id)
                    return current is not None and current.status.finished

            await wait(finished, 120, "the run to finish on the second worker")
        finally:
            second.terminate()
            second.wait(timeout=20)
        await arq.aclose()
        stored = httpx.get(f"{sim.base_url}/__sim/profiles").json()["data"]
        async with sessionmaker() as db:
            done = await db.get(SyncRun, run.id)
            batches = (await db.exec(select(SyncBatch).where(SyncBatch.run_id == run.id))).all()
    assert done.status == RunStatus.COMPLETED, done.error_message
    emails = [p.get("email") for p in stored]
    repeated = [e for e, n in collections.Counter(emails).items() if n > 1]
    strays = [p for p in stored if not str(p.get("email") or "").endswith(f"-{tag}@shop.test")]
    # Nothing lost, no duplicate profiles (the message says which, should it ever happen).
    assert len(emails) == total and not repeated and not strays, (
        f"{len(emails)} profiles; repeated emails {repeated[:5]}; strays {strays[:3]}"
    )
    assert done.items_sent == total == sum(b.accepted for b in batches)
    assert sorted(b.seq for b in batches) == [0, 1, 2] and all(b.status == BatchStatus.SENT for b in batches)


@pytest.fixture
def sim_config(simulator_url: str) -> Any:
    """Change the session simulator's config for one test; every key changed is put back after."""
    before = httpx.get(f"{simulator_url}/__sim/config").json()
    changed: dict[str, Any] = {}

    def _set(**changes: Any) -> None:
        for key, value in changes.items():
            if key == "faults":
                changed.setdefault("faults", {}).update({f: before["faults"][f] for f in value})
            else:
                changed[key] = before[key]
        httpx.post(f"{simulator_url}/__sim/config", json=changes).raise_for_status()

    yield _set
    if changed:
        httpx.post(f"{simulator_url}/__sim/config", json=changed).raise_for_status()


async def _conflicting_rows(klaviyo: KlaviyoClient, tag: str) -> tuple[list[dict[str, str]], dict[int, str]]:
    """Six rows; rows 2 and 5 are known profiles naming another profile's external id, so the import
    job refuses them."""
    owners = [
        await klaviyo.import_profile({"email": f"owner{n}-{tag}@shop.test", "external_id": f"X{n}-{tag}"})
        for n in (2, 5)
    ]
    assert all(owners)
    mail = {n: f"a{n}-{tag}@shop.test" for n in range(1, 7)}
    for n in (2, 5):
        await klaviyo.import_profile({"email": mail[n], "first_name": "Kept"})
    rows = [
        {
            "email": mail[n],
            "phone": "",
            "customer_id": f"C{n}-{tag}",
            "first": f"F{n}",
            "title": "",
            "city": "",
        }
        | {"tier": ""}
        for n in range(1, 7)
    ]
    rows[1]["customer_id"], rows[4]["customer_id"] = f"X2-{tag}", f"X5-{tag}"
    return rows, mail


@pytest.mark.parametrize("pointers", ["absolute", "relative", "none"])
async def test_import_errors_land_on_their_rows_whatever_the_pointer_form(
    pointers, run_settings, klaviyo, sessionmaker, tmp_path, run_worker_burst, simulator_url, sim_config
):
    # Klaviyo's spec leaves source.pointer's form open; original_payload names the profile as sent.
    sim_config(job_error_pointers=pointers)
    tag = uuid.uuid4().hex[:8]
    rows, mail = await _conflicting_rows(klaviyo, tag)
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "profiles.csv")
    mapping = await make_mapping(sessionmaker, profile_spec(unique("pointers ")))

    run = await run_to_end(sessionmaker, run_worker_burst, run_settings, upload, mapping)

    assert run.status == RunStatus.COMPLETED, run.error_message
    async with sessionmaker() as db:
        errors = (await db.exec(select(RowError).where(RowError.run_id == run.id))).all()
        (batch,) = (await db.exec(select(SyncBatch).where(SyncBatch.run_id == run.id))).all()
    assert sorted((e.row_number, e.rule) for e in errors) == [
        (2, "duplicate_profile"),
        (5, "duplicate_profile"),
    ]
    assert {e.row_number: e.values["email"] for e in errors} == {2: mail[2], 5: mail[5]}
    assert run.items_sent == 4 and run.rows_failed == 2
    assert (batch.accepted, batch.rejected) == (4, 2)
    assert [_profile(simulator_url, mail[n])["first_name"] for n in (2, 5)] == ["Kept", "Kept"]
    assert all(_profile(simulator_url, mail[n]) for n in (1, 3, 4, 6))


async def test_a_job_refusing_more_than_it_names_is_counted_and_shown(
    run_settings, klaviyo, sessionmaker, tmp_path, run_worker_burst, sim_config, client, as_role
):
    from models import Role

    # The job says 2 failed but lists no error: which rows is unknown, and they are not "sent".
    sim_config(faults={"job_errors_hidden_share": 1.0})
    tag = uuid.uuid4().hex[:8]
    rows, _ = await _conflicting_rows(klaviyo, tag)
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "profiles.csv")
    mapping = await make_mapping(sessionmaker, profile_spec(unique("hidden ")))

    run = await run_to_end(sessionmaker, run_worker_burst, run_settings, upload, mapping)

    assert run.status == RunStatus.COMPLETED, run.error_message
    assert run.items_sent == 4  # the job's completed_count, never more
    assert run.summary["refused_row_unknown"] == 2
    async with sessionmaker() as db:
        errors = (await db.exec(select(RowError).where(RowError.run_id == run.id))).all()
    assert [(e.row_number, e.rule, e.values.get("count")) for e in errors] == [(0, "refused_row_unknown", 2)]
    await as_role(Role.VIEWER)
    page = await client.get(f"/runs/{run.id}")
    assert "Refused by Klaviyo, row unknown: 2 profiles" in page.text


async def test_a_settled_job_whose_totals_do_not_add_up_is_not_counted_as_accepted(
    run_settings, sessionmaker, tmp_path, run_worker_burst, simulator_url, sim_config, client, as_role
):
    from models import Role

    # Klaviyo reports the job complete with total_count 0 for every profile sent.
    sim_config(faults={"job_zero_counts_share": 1.0})
    tag = uuid.uuid4().hex[:8]
    rows = [
        {
            "email": f"z{n}-{tag}@shop.test",
            "phone": "",
            "customer_id": "",
            "first": "Z",
            "title": "",
            "city": "",
        }
        | {"tier": ""}
        for n in range(30)
    ]
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "profiles.csv")
    mapping = await make_mapping(sessionmaker, profile_spec(unique("zero ")))

    run = await run_to_end(sessionmaker, run_worker_burst, run_settings, upload, mapping)

    assert run.status == RunStatus.COMPLETED, run.error_message
    assert run.items_sent == 0 and run.rows_failed == 30
    assert run.summary["unconfirmed_rows"] == 30
    async with sessionmaker() as db:
        errors = (await db.exec(select(RowError).where(RowError.run_id == run.id))).all()
        (batch,) = (await db.exec(select(SyncBatch).where(SyncBatch.run_id == run.id))).all()
    assert {e.rule for e in errors} == {"job_unconfirmed"} and len(errors) == 30
    assert "0 total, 0 completed and 0 failed for 30 sent" in errors[0].message
    assert (batch.accepted, batch.rejected) == (0, 30)
    await as_role(Role.VIEWER)
    page = await client.get(f"/runs/{run.id}")
    assert "30 rows went in Klaviyo jobs whose totals do not add up" in page.text
