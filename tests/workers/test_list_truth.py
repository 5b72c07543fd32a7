"""A subscription run whose list comes from its mapping: the run page and the audit name the list
the requests went to. Real PostgreSQL, Redis, worker, web app and simulator."""

from __future__ import annotations

from sqlmodel import col, select

from models import AuditEvent, RunStatus
from sync.mapping import Target, TargetKind
from tests.support.env import unique
from tests.support.runs import csv_text, make_mapping, make_upload
from tests.workers.test_lists import (
    _create_list,
    _finished,
    _list_run,
    _subscription_spec,
    lists_env,  # noqa: F401  (fixture)
    sim_list,
    sim_profile,
)


async def test_subscription_into_the_mappings_list_says_so_on_the_page_and_in_the_audit(
    lists_env,  # noqa: F811
    run_worker_burst,
    sessionmaker,
    simulator_url,
    tmp_path,
):
    client = lists_env
    name = unique("From the mapping ")
    list_id = await _create_list(client, run_worker_burst, sessionmaker, name)
    people = [{"email": f"{unique('ml')}@shop.test", "phone": ""} for _ in range(3)]
    upload = await make_upload(sessionmaker, tmp_path, csv_text(people), "subs.csv")
    spec = _subscription_spec()
    spec = spec.model_copy(update={"target": Target(kind=TargetKind.SUBSCRIPTION, list_id=list_id)})
    mapping = await make_mapping(sessionmaker, spec)

    # Started without choosing a list: the requests go to the mapping's list.
    run_id = await _list_run(client, None, upload, mapping)
    assert await run_worker_burst(client.test_settings) >= 1
    run, _ = await _finished(sessionmaker, run_id)
    assert run.status == RunStatus.COMPLETED and run.items_sent == 3
    members = set(sim_list(simulator_url, list_id)["members"])
    for person in people:
        profile = sim_profile(simulator_url, person["email"])
        assert profile is not None and profile["id"] in members
        assert profile["subscriptions"]["email"]["marketing"]["list_id"] == list_id

    page = (await client.get(f"/runs/{run_id}")).text
    chip = page.split('data-testid="run-list">', 1)[1].split("</span>", 1)[0]
    assert "no list" not in chip
    assert f'subscribes to list <a href="/lists/{list_id}">{name}</a> (the mapping\'s list)' in chip
    async with sessionmaker() as db:
        query = select(AuditEvent).where(AuditEvent.target == f"run #{run_id}")
        (event,) = (await db.exec(query.order_by(col(AuditEvent.id)))).all()
    assert event.action == "list.run.subscribe" and event.detail["list"] == list_id
