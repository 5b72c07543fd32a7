"""Lists and subscriptions end to end: the Lists page, a real arq worker and the simulator over HTTP.

Real pieces only: PostgreSQL, Redis, an arq worker in burst mode, and the simulator process.
"""

from __future__ import annotations

import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlmodel import select

from models import Account, KlaviyoList, ListOperation, Role, RowError, RunStatus, SyncRun
from models.klaviyo_list import ListOperationRow
from sync.mapping import Email, MappingOptions, Phone, Target, TargetKind, column
from sync.mapping import Mapping as Spec
from sync.row_filters import RowFilter
from tests.support.env import unique
from tests.support.runs import csv_text, make_mapping, make_upload
from tests.support.web import login, make_user, post_form
from web.app import create_app

SANDBOX_KEY = "pk_sandbox_0000000000000000000000000000"


def sim_api(simulator_url: str) -> httpx.Client:
    return httpx.Client(
        base_url=simulator_url,
        headers={
            "Authorization": f"Klaviyo-API-Key {SANDBOX_KEY}",
            "revision": "2026-10-15",
            "accept": "application/vnd.api+json",
            "content-type": "application/vnd.api+json",
        },
    )


def sim_list(simulator_url: str, list_id: str) -> dict:
    return next(kl for kl in httpx.get(f"{simulator_url}/__sim/lists").json()["data"] if kl["id"] == list_id)


def sim_profile(simulator_url: str, email: str) -> dict | None:
    found = httpx.get(f"{simulator_url}/__sim/profiles", params={"email": email}).json()["data"]
    return found[0] if found else None


def sim_consent(simulator_url: str) -> dict:
    return httpx.get(f"{simulator_url}/__sim/consent").json()


@pytest.fixture
async def lists_env(settings, simulator_url, sessionmaker, tmp_path):
    test_settings = settings.model_copy(
        update={"sandbox_url": simulator_url, "klaviyo_time_scale": 20.0, "upload_dir": tmp_path}
    )
    async with sessionmaker() as db:
        account = (await db.exec(select(Account).order_by(Account.id))).first()
        if account is not None:
            account.sandbox = True
            db.add(account)
            await db.commit()
    app = create_app(test_settings)
    async with AsyncTestClient(app) as client:
        operator = await make_user(sessionmaker, unique("op"), Role.OPERATOR)
        assert (await login(client, operator.username)).status_code == 302
        client.test_settings = test_settings
        yield client


async def _op(sessionmaker, op_id: int) -> ListOperation:
    async with sessionmaker() as db:
        op = await db.get(ListOperation, op_id)
        assert op is not None
        return op


async def _rows(sessionmaker, op_id: int) -> list[ListOperationRow]:
    async with sessionmaker() as db:
        query = select(ListOperationRow).where(ListOperationRow.operation_id == op_id)
        return list((await db.exec(query.order_by(ListOperationRow.row))).all())


def _op_id(response: httpx.Response) -> int:
    assert response.status_code == 200, response.text
    marker = 'data-op-id="'
    start = response.text.index(marker) + len(marker)
    return int(response.text[start : response.text.index('"', start)])


async def _create_list(
    client, run_worker_burst, sessionmaker, name: str, opt_in: str = "single_opt_in"
) -> str:
    op_id = _op_id(await post_form(client, "/lists/create", {"name": name, "opt_in_process": opt_in}))
    assert await run_worker_burst(client.test_settings) >= 1
    op = await _op(sessionmaker, op_id)
    assert op.status == "completed", op.message
    return str(op.list_id)


async def test_sync_count_create_and_rename(lists_env, run_worker_burst, sessionmaker, simulator_url):
    client = lists_env
    name = unique("Made in Klaviyo ")
    with sim_api(simulator_url) as api:
        made = api.post("/api/lists", json={"data": {"type": "list", "attributes": {"name": name}}})
        assert made.status_code == 201, made.text
        outside_id = made.json()["data"]["id"]

    synced = await post_form(client, "/lists/sync")
    assert synced.status_code == 200 and "Syncing" in synced.text
    assert await run_worker_burst(client.test_settings) >= 1
    status = await client.get("/lists/sync/status")
    assert "Synced" in status.text
    page = await client.get("/lists/")
    assert name in page.text and outside_id in page.text

    # The count is fetched only when asked, and cached in the row.
    counting = await post_form(client, f"/lists/{outside_id}/count")
    assert "counting" in counting.text
    assert await run_worker_burst(client.test_settings) >= 1
    cell = await client.get(f"/lists/{outside_id}/count")
    assert f'data-testid="count-{outside_id}">0<' in cell.text
    async with sessionmaker() as db:
        row = (await db.exec(select(KlaviyoList).where(KlaviyoList.klaviyo_id == outside_id))).one()
        assert row.profile_count == 0 and row.counted_at is not None

    created_name = unique("Console list ")
    list_id = await _create_list(client, run_worker_burst, sessionmaker, created_name, "double_opt_in")
    assert sim_list(simulator_url, list_id)["opt_in_process"] == "double_opt_in"
    detail = await client.get(f"/lists/{list_id}")
    assert created_name in detail.text and "Double opt-in" in detail.text
    assert 'data-testid="double-opt-in-warning"' in detail.text

    renamed = unique("Renamed ")
    op_id = _op_id(await post_form(client, f"/lists/{list_id}/rename", {"name": renamed}))
    assert await run_worker_burst(client.test_settings) >= 1
    assert (await _op(sessionmaker, op_id)).status == "completed"
    assert sim_list(simulator_url, list_id)["name"] == renamed
    assert renamed in (await client.get(f"/lists/{list_id}")).text

    audit = (await client.get("/audit")).text
    assert "list.create" in audit and "list.rename" in audit


async def test_daily_create_limit_is_explained(lists_env, run_worker_burst, sessionmaker, simulator_url):
    client = lists_env
    httpx.post(f"{simulator_url}/__sim/config", json={"list_create_daily_limit": 0}).raise_for_status()
    try:
        op_id = _op_id(await post_form(client, "/lists/create", {"name": unique("One too many ")}))
        assert await run_worker_burst(client.test_settings) >= 1
    finally:
        httpx.post(f"{simulator_url}/__sim/config", json={"list_create_daily_limit": 150}).raise_for_status()
    op = await _op(sessionmaker, op_id)
    assert op.status == "failed"
    assert "150 new lists per account per day" in (op.message or "")
    shown = await client.get(f"/lists/ops/{op_id}")
    assert "150 new lists" in shown.text


async def test_membership_form_adds_and_removes_without_consent(
    lists_env, run_worker_burst, sessionmaker, simulator_url
):
    client = lists_env
    list_id = await _create_list(client, run_worker_burst, sessionmaker, unique("Members "))
    emails = [f"{unique('m')}@shop.test" for _ in range(3)]
    contacts = "\n".join([*emails, "not-an-address", "(202) 555-01x"])
    op_id = _op_id(
        await post_form(client, f"/lists/{list_id}/members", {"action": "add", "contacts": contacts})
    )
    assert await run_worker_burst(client.test_settings) >= 1
    op = await _op(sessionmaker, op_id)
    assert op.status == "completed" and op.summary == {"ok": 3, "failed": 2}
    rows = await _rows(sessionmaker, op_id)
    assert [r.status for r in rows[:3]] == ["added"] * 3
    assert "not a phone number" in rows[3].error and "phone number" in rows[4].error
    members = set(sim_list(simulator_url, list_id)["members"])
    ids = {sim_profile(simulator_url, e)["id"] for e in emails}
    assert ids <= members
    # Membership does not touch consent.
    assert not sim_profile(simulator_url, emails[0])["subscriptions"].get("email")

    unknown = f"{unique('nobody')}@shop.test"
    op_id = _op_id(
        await post_form(
            client, f"/lists/{list_id}/members", {"action": "remove", "contacts": f"{emails[0]}\n{unknown}"}
        )
    )
    assert await run_worker_burst(client.test_settings) >= 1
    assert (await _op(sessionmaker, op_id)).status == "completed"
    assert [(r.status, r.error) for r in await _rows(sessionmaker, op_id)] == [
        ("removed", None),
        (None, "no profile with this email"),
    ]
    assert sim_profile(simulator_url, unknown) is None
    shown = await client.get(f"/lists/ops/{op_id}/rows.csv")
    assert "no profile with this email" in shown.text and unknown in shown.text
    assert set(sim_list(simulator_url, list_id)["members"]) == ids - {
        sim_profile(simulator_url, emails[0])["id"]
    }


def _subscription_spec(*, historical: bool = False, channels=("email",), transactional: bool = False) -> Spec:
    fields = [column("email", "email", Email()), column("phone", "phone_number", Phone())]
    if historical:
        fields.append(column("consented_at", "consented_at"))
    return Spec(
        name=unique("subscribe "),
        target=Target(kind=TargetKind.SUBSCRIPTION),
        options=MappingOptions(
            channels=list(channels), historical_import=historical, sms_transactional=transactional
        ),
        fields=fields,
    )


async def _list_run(client, list_id, upload, mapping, action="subscribe", **extra) -> int:
    form = {
        "list_id": list_id or "",
        "action": action,
        "upload_id": str(upload.id),
        "mapping_id": str(mapping.id),
        **extra,
    }
    response = await post_form(client, "/lists/runs", form, follow_redirects=False)
    assert response.status_code == 303, response.text
    return int(response.headers["location"].rsplit("/", 1)[1])


async def _finished(sessionmaker, run_id: int) -> tuple[SyncRun, list[RowError]]:
    async with sessionmaker() as db:
        run = await db.get(SyncRun, run_id)
        errors = (await db.exec(select(RowError).where(RowError.run_id == run_id))).all()
        return run, list(errors)


async def test_subscribe_csv_email_and_sms_with_invalid_phone_rows(
    lists_env, run_worker_burst, sessionmaker, simulator_url, tmp_path
):
    client = lists_env
    list_id = await _create_list(client, run_worker_burst, sessionmaker, unique("Subscribers "))
    people = [{"email": f"{unique('s')}@shop.test", "phone": f"+1202555{i:04d}"} for i in range(150, 154)]
    bad = {"email": f"{unique('bad')}@shop.test", "phone": "12345"}
    upload = await make_upload(sessionmaker, tmp_path, csv_text([*people, bad]), "subs.csv")
    spec = _subscription_spec(channels=("email", "sms"), transactional=True)
    mapping = await make_mapping(sessionmaker, spec)
    run_id = await _list_run(client, list_id, upload, mapping, custom_source="Spring popup")
    assert await run_worker_burst(client.test_settings) >= 1
    run, errors = await _finished(sessionmaker, run_id)
    assert run.status == RunStatus.COMPLETED, run.error_message
    assert run.kind == "subscription" and run.items_sent == 4 and run.rows_failed == 1
    assert [(e.row_number, e.rule) for e in errors] == [(5, "invalid_phone")]
    members = set(sim_list(simulator_url, list_id)["members"])
    for person in people:
        profile = sim_profile(simulator_url, person["email"])
        assert profile["id"] in members
        email = profile["subscriptions"]["email"]["marketing"]
        assert email["consent"] == "SUBSCRIBED" and email["custom_source"] == "Spring popup"
        assert profile["subscriptions"]["sms"]["marketing"]["consent"] == "SUBSCRIBED"
        assert profile["subscriptions"]["sms"]["transactional"]["consent"] == "SUBSCRIBED"
    assert sim_profile(simulator_url, bad["email"]) is None


async def test_double_opt_in_list_waits_for_confirmation_unless_historical(
    lists_env, run_worker_burst, sessionmaker, simulator_url, tmp_path
):
    client = lists_env
    list_id = await _create_list(client, run_worker_burst, sessionmaker, unique("Double "), "double_opt_in")

    # Live subscribe: a confirmation goes out first; consent pending, not yet a member.
    live = [{"email": f"{unique('d')}@shop.test", "phone": ""} for _ in range(2)]
    upload = await make_upload(sessionmaker, tmp_path, csv_text(live), "live.csv")
    mapping = await make_mapping(sessionmaker, _subscription_spec())
    run_id = await _list_run(client, list_id, upload, mapping)
    assert await run_worker_burst(client.test_settings) >= 1
    run, _ = await _finished(sessionmaker, run_id)
    assert run.status == RunStatus.COMPLETED and run.items_sent == 2
    assert sim_list(simulator_url, list_id)["profile_count"] == 0
    pending = {p["email"] for p in sim_consent(simulator_url)["pending_opt_ins"] if p["list_id"] == list_id}
    assert pending == {p["email"] for p in live}
    assert (
        sim_profile(simulator_url, live[0]["email"])["subscriptions"]["email"]["marketing"]["consent"]
        == "PENDING"
    )

    # Historical import: consented_at per row, in the past; skips double opt-in.
    rows = [
        {"email": f"{unique('h')}@shop.test", "phone": "", "consented_at": "2024-05-01T10:00:00Z"},
        {"email": f"{unique('h')}@shop.test", "phone": "", "consented_at": ""},
        {"email": f"{unique('h')}@shop.test", "phone": "", "consented_at": "2999-01-01T00:00:00Z"},
    ]
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "historical.csv")
    mapping = await make_mapping(sessionmaker, _subscription_spec(historical=True))
    run_id = await _list_run(client, list_id, upload, mapping)
    assert await run_worker_burst(client.test_settings) >= 1
    run, errors = await _finished(sessionmaker, run_id)
    assert run.status == RunStatus.COMPLETED and run.items_sent == 1
    assert sorted((e.row_number, e.rule) for e in errors) == [
        (2, "consented_at_missing"),
        (3, "consented_at_future"),
    ]
    profile = sim_profile(simulator_url, rows[0]["email"])
    marketing = profile["subscriptions"]["email"]["marketing"]
    assert marketing["consent"] == "SUBSCRIBED" and marketing["historical_import"] is True
    assert marketing["consented_at"].startswith("2024-05-01T10:00:00")
    assert set(sim_list(simulator_url, list_id)["members"]) == {profile["id"]}


async def test_membership_csv_run_adds_then_removes_profile_ids(
    lists_env, run_worker_burst, sessionmaker, simulator_url, tmp_path
):
    client = lists_env
    list_id = await _create_list(client, run_worker_burst, sessionmaker, unique("By id "))
    with sim_api(simulator_url) as api:
        ids = []
        for _ in range(3):
            doc = {"data": {"type": "profile", "attributes": {"email": f"{unique('p')}@shop.test"}}}
            ids.append(api.post("/api/profile-import", json=doc).json()["data"]["id"])
    upload = await make_upload(sessionmaker, tmp_path, csv_text([{"profile_id": i} for i in ids]), "ids.csv")
    spec = Spec(
        name=unique("membership "),
        target=Target(kind=TargetKind.LIST_MEMBERSHIP),
        fields=[column("profile_id", "id")],
    )
    mapping = await make_mapping(sessionmaker, spec)
    run_id = await _list_run(client, list_id, upload, mapping, action="add")
    assert await run_worker_burst(client.test_settings) >= 1
    run, _ = await _finished(sessionmaker, run_id)
    assert run.status == RunStatus.COMPLETED and run.items_sent == 3, run.error_message
    assert set(sim_list(simulator_url, list_id)["members"]) == set(ids)

    run_id = await _list_run(client, list_id, upload, mapping, action="remove")
    assert await run_worker_burst(client.test_settings) >= 1
    run, _ = await _finished(sessionmaker, run_id)
    assert run.status == RunStatus.COMPLETED and run.kind == "list_membership_remove"
    assert sim_list(simulator_url, list_id)["members"] == []


async def test_subscribe_to_the_account_without_a_list_and_membership_needs_a_list(
    lists_env, run_worker_burst, sessionmaker, simulator_url, tmp_path
):
    client = lists_env
    person = {"email": f"{unique('acct')}@shop.test", "phone": ""}
    upload = await make_upload(sessionmaker, tmp_path, csv_text([person]), "account.csv")
    mapping = await make_mapping(sessionmaker, _subscription_spec())
    run_id = await _list_run(client, None, upload, mapping)
    assert await run_worker_burst(client.test_settings) >= 1
    run, _ = await _finished(sessionmaker, run_id)
    assert run.status == RunStatus.COMPLETED and run.items_sent == 1 and run.options.get("list_id") is None
    marketing = sim_profile(simulator_url, person["email"])["subscriptions"]["email"]["marketing"]
    assert marketing["consent"] == "SUBSCRIBED" and marketing["list_id"] is None

    spec = Spec(
        name=unique("m "), target=Target(kind=TargetKind.LIST_MEMBERSHIP), fields=[column("email", "id")]
    )
    membership = await make_mapping(sessionmaker, spec)
    form = {"upload_id": str(upload.id), "mapping_id": str(membership.id), "backfill": "1"}
    refused = await post_form(client, "/runs/", form, follow_redirects=False)
    assert refused.status_code == 400 and "needs a list" in refused.text


async def test_unsubscribe_checks_membership_and_guards_global_unsubscribes(
    lists_env, run_worker_burst, sessionmaker, simulator_url
):
    client = lists_env
    list_id = await _create_list(client, run_worker_burst, sessionmaker, unique("Unsub "))
    member, outsider = f"{unique('in')}@shop.test", f"{unique('out')}@shop.test"
    _op_id(await post_form(client, f"/lists/{list_id}/members", {"action": "add", "contacts": member}))
    assert await run_worker_burst(client.test_settings) >= 1
    with sim_api(simulator_url) as api:
        doc = {"data": {"type": "profile", "attributes": {"email": outsider}}}
        assert api.post("/api/profile-import", json=doc).status_code in (200, 201)

    check = await post_form(
        client, f"/lists/{list_id}/unsubscribe", {"contacts": f"{member}\n{outsider}", "channel_email": "1"}
    )
    check_id = _op_id(check)
    assert await run_worker_burst(client.test_settings) >= 1
    shown = await client.get(f"/lists/ops/{check_id}")
    assert 'data-status="needs_confirmation"' in shown.text
    assert 'data-testid="global-count">1<' in shown.text and "globally" in shown.text
    op = await _op(sessionmaker, check_id)
    assert op.summary == {"in_list": 1, "global": 1, "invalid": 0}
    # Nothing was unsubscribed by the check.
    before = sim_consent(simulator_url)
    assert not [u for u in before["global_unsubscribes"] if u["email"] in (member, outsider)]

    # Everyone, without ticking the box: refused.
    refused = await post_form(client, f"/lists/ops/{check_id}/confirm", {"scope": "all"})
    assert refused.status_code == 400 and "confirm the global unsubscribe" in refused.text

    done = await post_form(client, f"/lists/ops/{check_id}/confirm", {"scope": "members"})
    unsub_id = _op_id(done)
    assert await run_worker_burst(client.test_settings) >= 1
    unsub = await _op(sessionmaker, unsub_id)
    assert unsub.status == "completed" and unsub.total == 1
    consent = sim_consent(simulator_url)
    assert [u["email"] for u in consent["list_unsubscribes"] if u["list_id"] == list_id] == [member]
    assert not [u for u in consent["global_unsubscribes"] if u["email"] in (member, outsider)]
    assert sim_list(simulator_url, list_id)["members"] == []
    # A confirmed check cannot be confirmed again.
    again = await post_form(client, f"/lists/ops/{check_id}/confirm", {"scope": "all", "confirm_global": "1"})
    assert again.status_code == 400


async def test_unsubscribe_from_an_upload_is_checked_row_by_row(
    lists_env, run_worker_burst, sessionmaker, simulator_url, tmp_path
):
    client = lists_env
    list_id = await _create_list(client, run_worker_burst, sessionmaker, unique("From CSV "))
    member, outsider = f"{unique('in')}@shop.test", f"{unique('out')}@shop.test"
    _op_id(await post_form(client, f"/lists/{list_id}/members", {"action": "add", "contacts": member}))
    assert await run_worker_burst(client.test_settings) >= 1
    rows = [{"Email": member}, {"Email": outsider}, {"Email": "broken"}]
    upload = await make_upload(sessionmaker, client.test_settings.upload_dir, csv_text(rows), "unsub.csv")
    form = {"upload_id": str(upload.id), "column": "Email", "channel_email": "1"}
    check_id = _op_id(await post_form(client, f"/lists/{list_id}/unsubscribe", form))
    assert await run_worker_burst(client.test_settings) >= 1
    check = await _op(sessionmaker, check_id)
    assert check.status == "needs_confirmation" and check.total == 3
    assert check.summary == {"in_list": 1, "global": 1, "invalid": 1}
    assert [r.scope for r in await _rows(sessionmaker, check_id)] == ["list", "global", None]
    dismissed = await post_form(client, f"/lists/ops/{check_id}/dismiss")
    assert dismissed.status_code == 200 and "nobody was unsubscribed" in dismissed.text
    assert (await _op(sessionmaker, check_id)).status == "cancelled"
    refused = await post_form(client, f"/lists/ops/{check_id}/confirm", {"scope": "members"})
    assert refused.status_code == 400
    consent = sim_consent(simulator_url)
    assert not [u for u in consent["global_unsubscribes"] if u["email"] == outsider]
    assert not [u for u in consent["list_unsubscribes"] if u["email"] == member]


async def test_confirmed_global_unsubscribe_and_suppression(
    lists_env, run_worker_burst, sessionmaker, simulator_url
):
    client = lists_env
    list_id = await _create_list(client, run_worker_burst, sessionmaker, unique("Global "))
    outsider = f"{unique('g')}@shop.test"
    check_id = _op_id(
        await post_form(client, f"/lists/{list_id}/unsubscribe", {"contacts": outsider, "channel_email": "1"})
    )
    assert await run_worker_burst(client.test_settings) >= 1
    unsub_id = _op_id(
        await post_form(client, f"/lists/ops/{check_id}/confirm", {"scope": "all", "confirm_global": "1"})
    )
    assert await run_worker_burst(client.test_settings) >= 1
    assert [r.status for r in await _rows(sessionmaker, unsub_id)] == ["unsubscribed globally"]
    assert [
        u["reason"] for u in sim_consent(simulator_url)["global_unsubscribes"] if u["email"] == outsider
    ] == ["not_in_list"]

    refused = await post_form(client, "/lists/suppress", {"contacts": outsider})
    assert refused.status_code == 400
    op_id = _op_id(await post_form(client, "/lists/suppress", {"contacts": outsider, "confirm": "1"}))
    assert await run_worker_burst(client.test_settings) >= 1
    assert (await _op(sessionmaker, op_id)).summary == {"ok": 1, "failed": 0}
    assert outsider in {s["email"] for s in sim_consent(simulator_url)["suppressions"]}


async def test_viewer_cannot_change_lists(client, as_role):
    await as_role(Role.VIEWER)
    assert (await client.get("/lists/")).status_code == 200
    assert (await post_form(client, "/lists/sync")).status_code == 403
    assert (await post_form(client, "/lists/create", {"name": "x"})).status_code == 403


# -- membership by email or phone, and what the checks cost ------------------------------------


def sim_requests(simulator_url: str) -> dict[str, int]:
    """Requests answered so far per endpoint (the simulator is shared: compare before and after)."""
    stats = httpx.get(f"{simulator_url}/__sim/stats").json()["requests"]
    return {name: sum(by_status.values()) for name, by_status in stats.items()}


def _spent(before: dict[str, int], after: dict[str, int], name: str) -> int:
    return after.get(name, 0) - before.get(name, 0)


def seed_profiles(simulator_url: str, emails: list[str], list_id: str | None = None) -> None:
    """Profiles (and list members) through a bulk import job, completed at once."""
    with sim_api(simulator_url) as api:
        for start in range(0, len(emails), 10_000):
            profiles = [
                {"type": "profile", "attributes": {"email": e}} for e in emails[start : start + 10_000]
            ]
            job = {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": profiles}}}
            if list_id:
                job["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
            assert api.post("/api/profile-bulk-import-jobs", json={"data": job}).status_code == 202
    httpx.post(f"{simulator_url}/__sim/jobs/complete").raise_for_status()


def _membership_spec() -> Spec:
    return Spec(
        name=unique("members by email "),
        target=Target(kind=TargetKind.LIST_MEMBERSHIP),
        fields=[column("email", "email", Email()), column("phone", "phone_number", Phone())],
    )


async def test_membership_csv_by_email_or_phone_creates_on_add_and_reports_unknown_on_remove(
    lists_env, run_worker_burst, sessionmaker, simulator_url, tmp_path
):
    client = lists_env
    list_id = await _create_list(client, run_worker_burst, sessionmaker, unique("By email "))
    known_email, new_email = f"{unique('k')}@shop.test", f"{unique('n')}@shop.test"
    known_phone = "+12025550177"
    with sim_api(simulator_url) as api:
        for attrs in ({"email": known_email}, {"phone_number": known_phone}):
            doc = {"data": {"type": "profile", "attributes": attrs}}
            assert api.post("/api/profile-import", json=doc).status_code in (200, 201)
    rows = [
        {"email": known_email.upper(), "phone": ""},
        {"email": "", "phone": "(202) 555-0177"},
        {"email": new_email, "phone": ""},
        {"email": "", "phone": "555"},
        {"email": "", "phone": ""},
    ]
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "members.csv")
    mapping = await make_mapping(sessionmaker, _membership_spec())
    run_id = await _list_run(client, list_id, upload, mapping, action="add")
    assert await run_worker_burst(client.test_settings) >= 1
    run, errors = await _finished(sessionmaker, run_id)
    assert run.status == RunStatus.COMPLETED, run.error_message
    assert run.items_sent == 3 and run.rows_failed == 2
    assert sorted((e.row_number, e.rule) for e in errors) == [(4, "invalid_phone"), (5, "missing_profile_id")]
    # The unknown email got a profile (identifier only: no consent) and joined the list.
    created = sim_profile(simulator_url, new_email)
    assert created is not None and not created["subscriptions"].get("email")
    members = set(sim_list(simulator_url, list_id)["members"])
    assert {sim_profile(simulator_url, known_email)["id"], created["id"]} <= members and len(members) == 3

    unknown = f"{unique('u')}@shop.test"
    rows = [
        {"email": known_email, "phone": ""},
        {"email": unknown, "phone": ""},
        {"email": "", "phone": "+12025550178"},
    ]
    upload = await make_upload(sessionmaker, tmp_path, csv_text(rows), "remove.csv")
    run_id = await _list_run(client, list_id, upload, mapping, action="remove")
    assert await run_worker_burst(client.test_settings) >= 1
    run, errors = await _finished(sessionmaker, run_id)
    assert run.status == RunStatus.COMPLETED and run.items_sent == 1 and run.rows_failed == 2
    assert sorted((e.row_number, e.rule, e.message) for e in errors) == [
        (2, "no_profile", "no profile with this email"),
        (3, "no_profile", "no profile with this phone number"),
    ]
    assert sim_profile(simulator_url, unknown) is None  # a remove never creates anyone
    assert len(sim_list(simulator_url, list_id)["members"]) == 2
    download = await client.get(f"/runs/{run_id}/errors.csv")
    assert download.status_code == 200 and "no profile with this email" in download.text
    assert unknown in download.text
    page = await client.get(f"/runs/{run_id}")
    assert "no profile with this email" in page.text


async def _add_by_email(
    client, run_worker_burst, sessionmaker, simulator_url, tmp_path, list_id: str, emails: list[str]
) -> tuple[int, dict[str, int], dict[str, int]]:
    """An "add to list" run over a CSV of these emails, worked to the end: the run id and the
    simulator's request counts before and after."""
    upload = await make_upload(
        sessionmaker, tmp_path, csv_text([{"email": e, "phone": ""} for e in emails]), "members.csv"
    )
    mapping = await make_mapping(sessionmaker, _membership_spec())
    before = sim_requests(simulator_url)
    run_id = await _list_run(client, list_id, upload, mapping, action="add")
    assert await run_worker_burst(client.test_settings) >= 1
    return run_id, before, sim_requests(simulator_url)


async def test_membership_run_sends_1000_per_request_and_looks_up_100_at_a_time(
    lists_env, run_worker_burst, sessionmaker, simulator_url, tmp_path
):
    client = lists_env
    list_id = await _create_list(client, run_worker_burst, sessionmaker, unique("Thousand "))
    emails = [f"{unique('t')}@shop.test" for _ in range(1050)]
    seed_profiles(simulator_url, emails)
    run_id, before, after = await _add_by_email(
        client, run_worker_burst, sessionmaker, simulator_url, tmp_path, list_id, emails
    )
    run, errors = await _finished(sessionmaker, run_id)
    assert run.status == RunStatus.COMPLETED and run.items_sent == 1050 and not errors
    assert sim_list(simulator_url, list_id)["profile_count"] == 1050
    assert _spent(before, after, "POST /api/lists/{id}/relationships/profiles") == 2
    assert _spent(before, after, "GET /api/profiles") == 11
    assert _spent(before, after, "POST /api/profile-import") == 0  # everyone already had a profile


async def test_many_unknown_people_are_created_by_one_import_job_then_added(
    lists_env, run_worker_burst, sessionmaker, simulator_url, tmp_path
):
    client = lists_env
    list_id = await _create_list(client, run_worker_burst, sessionmaker, unique("Newcomers "))
    known = [f"{unique('k')}@shop.test" for _ in range(20)]
    seed_profiles(simulator_url, known)
    unknown = [f"{unique('n')}@shop.test" for _ in range(300)]
    run_id, before, after = await _add_by_email(
        client, run_worker_burst, sessionmaker, simulator_url, tmp_path, list_id, known + unknown
    )
    run, errors = await _finished(sessionmaker, run_id)
    assert run.status == RunStatus.COMPLETED and run.items_sent == 320 and not errors
    assert sim_list(simulator_url, list_id)["profile_count"] == 320
    # 300 single creates would take 24 s of Klaviyo's 750-a-minute budget: one job instead.
    assert _spent(before, after, "POST /api/profile-import") == 0
    assert _spent(before, after, "POST /api/profile-bulk-import-jobs") == 1
    # 4 lookups before (320 people), 3 after for the 300 created, then one add.
    assert _spent(before, after, "GET /api/profiles") == 7
    assert _spent(before, after, "POST /api/lists/{id}/relationships/profiles") == 1
    created = sim_profile(simulator_url, unknown[0])
    assert created is not None and not created["subscriptions"].get("email")  # no consent implied


async def test_created_profiles_klaviyo_cannot_find_yet_are_looked_up_again_then_left_to_retry(
    lists_env, run_worker_burst, sessionmaker, simulator_url, tmp_path
):
    client = lists_env
    list_id = await _create_list(client, run_worker_burst, sessionmaker, unique("Lagging "))
    unknown = [f"{unique('lag')}@shop.test" for _ in range(60)]
    # New profiles stay out of searches far longer than the run waits.
    httpx.post(f"{simulator_url}/__sim/config", json={"search_lag_seconds": 100_000}).raise_for_status()
    try:
        run_id, before, after = await _add_by_email(
            client, run_worker_burst, sessionmaker, simulator_url, tmp_path, list_id, unknown
        )
    finally:
        httpx.post(f"{simulator_url}/__sim/config", json={"search_lag_seconds": 0}).raise_for_status()
    run, errors = await _finished(sessionmaker, run_id)
    assert run.rows_failed == 60 and sim_list(simulator_url, list_id)["profile_count"] == 0
    assert {e.message for e in errors} == {
        "Klaviyo's import job ended but this profile could not be found; retry the row"
    }
    assert _spent(before, after, "POST /api/profile-bulk-import-jobs") == 1
    assert _spent(before, after, "GET /api/profiles") == 1 + 3  # the first look, then three after the job
    # Once Klaviyo finds them, retrying the failed rows adds them (the job made them already).
    retry = await post_form(client, f"/runs/{run_id}/retry", follow_redirects=False)
    assert retry.status_code in (302, 303)
    assert await run_worker_burst(client.test_settings) >= 1
    assert sim_list(simulator_url, list_id)["profile_count"] == 60
    assert _spent(after, sim_requests(simulator_url), "POST /api/profile-bulk-import-jobs") == 0


async def test_membership_check_costs_what_is_checked_not_the_list_size(
    lists_env, run_worker_burst, sessionmaker, simulator_url
):
    client = lists_env
    list_id = await _create_list(client, run_worker_burst, sessionmaker, unique("Big list "))
    members = [f"{unique('b')}@shop.test" for _ in range(1500)]
    seed_profiles(simulator_url, members, list_id)
    assert sim_list(simulator_url, list_id)["profile_count"] == 1500
    outsider = f"{unique('o')}@shop.test"
    before = sim_requests(simulator_url)
    check_id = _op_id(
        await post_form(
            client,
            f"/lists/{list_id}/unsubscribe",
            {"contacts": f"{members[7]}\n{members[1400]}\n{outsider}", "channel_email": "1"},
        )
    )
    assert await run_worker_burst(client.test_settings) >= 1
    after = sim_requests(simulator_url)
    assert (await _op(sessionmaker, check_id)).summary == {"in_list": 2, "global": 1, "invalid": 0}
    # One filtered request for three contacts; a full member listing would take 15.
    assert _spent(before, after, "GET /api/lists/{id}/profiles") == 1
    assert _spent(before, after, "GET /api/lists/{id}/relationships/profiles") == 0


async def test_unsubscribe_from_an_upload_past_10000_rows_keeps_the_guard(
    lists_env, run_worker_burst, sessionmaker, simulator_url
):
    client = lists_env
    list_id = await _create_list(client, run_worker_burst, sessionmaker, unique("Large unsub "))
    tag = unique("x")
    members = [f"member{i}.{tag}@shop.test" for i in range(150)]
    seed_profiles(simulator_url, members, list_id)
    outsiders = [f"outsider{i}.{tag}@shop.test" for i in range(10_000)]
    rows = [{"Email": e} for e in [*members, *outsiders, "not-an-email"]]
    settings = client.test_settings
    upload = await make_upload(sessionmaker, settings.upload_dir, csv_text(rows), "large-unsub.csv")
    form = {"upload_id": str(upload.id), "column": "Email", "channel_email": "1"}
    check_id = _op_id(await post_form(client, f"/lists/{list_id}/unsubscribe", form))
    assert await run_worker_burst(settings) >= 1
    check = await _op(sessionmaker, check_id)
    assert check.status == "needs_confirmation", check.message
    assert check.total == 10_151 and check.summary == {"in_list": 150, "global": 10_000, "invalid": 1}
    shown = await client.get(f"/lists/ops/{check_id}")
    assert 'data-testid="global-count">10,000<' in shown.text and "more in the CSV" in shown.text
    download = await client.get(f"/lists/ops/{check_id}/rows.csv")
    lines = download.text.splitlines()
    assert len(lines) == 10_152 and lines[1].split(",")[5] == "yes" and lines[200].split(",")[5] == "no"

    # Members only: the 10,000 outsiders are never sent, so nobody is unsubscribed globally.
    unsub_id = _op_id(await post_form(client, f"/lists/ops/{check_id}/confirm", {"scope": "members"}))
    assert await run_worker_burst(settings) >= 1
    unsub = await _op(sessionmaker, unsub_id)
    assert unsub.status == "completed" and unsub.total == 150 and unsub.summary == {"ok": 150, "failed": 0}
    consent = sim_consent(simulator_url)
    assert not [u for u in consent["global_unsubscribes"] if tag in u["email"]]
    assert len([u for u in consent["list_unsubscribes"] if u["list_id"] == list_id]) == 150


async def test_members_only_unsubscribe_skips_whoever_left_the_list_since_the_check(
    lists_env, run_worker_burst, sessionmaker, simulator_url
):
    client = lists_env
    list_id = await _create_list(client, run_worker_burst, sessionmaker, unique("Left since "))
    stays, leaves = f"{unique('s')}@shop.test", f"{unique('l')}@shop.test"
    seed_profiles(simulator_url, [stays, leaves], list_id)
    check_id = _op_id(
        await post_form(
            client, f"/lists/{list_id}/unsubscribe", {"contacts": f"{stays}\n{leaves}", "channel_email": "1"}
        )
    )
    assert await run_worker_burst(client.test_settings) >= 1
    assert (await _op(sessionmaker, check_id)).summary["in_list"] == 2
    with sim_api(simulator_url) as api:
        gone = {"data": [{"type": "profile", "id": sim_profile(simulator_url, leaves)["id"]}]}
        assert (
            api.request("DELETE", f"/api/lists/{list_id}/relationships/profiles", json=gone).status_code
            == 204
        )

    unsub_id = _op_id(await post_form(client, f"/lists/ops/{check_id}/confirm", {"scope": "members"}))
    assert await run_worker_burst(client.test_settings) >= 1
    rows = await _rows(sessionmaker, unsub_id)
    assert [(r.email, r.status) for r in rows] == [(stays, "unsubscribed from the list"), (leaves, None)]
    assert "no longer in the list" in rows[1].error
    consent = sim_consent(simulator_url)
    assert not [u for u in consent["global_unsubscribes"] if u["email"] == leaves]


async def test_created_list_is_kept_when_the_follow_up_read_fails(
    lists_env, run_worker_burst, sessionmaker, simulator_url
):
    """The create answer carries the list: a failing read after it must not report "Failed"."""
    client = lists_env
    name = unique("Read fails ")
    httpx.post(
        f"{simulator_url}/__sim/config", json={"faults": {"failing_routes": ["GET /api/lists/{id}"]}}
    ).raise_for_status()
    try:
        op_id = _op_id(await post_form(client, "/lists/create", {"name": name}))
        assert await run_worker_burst(client.test_settings) >= 1
    finally:
        httpx.post(
            f"{simulator_url}/__sim/config", json={"faults": {"failing_routes": []}}
        ).raise_for_status()
    op = await _op(sessionmaker, op_id)
    assert op.status == "completed", op.message
    made = [kl for kl in httpx.get(f"{simulator_url}/__sim/lists").json()["data"] if kl["name"] == name]
    assert len(made) == 1 and op.list_id == made[0]["id"]
    async with sessionmaker() as db:
        row = (await db.exec(select(KlaviyoList).where(KlaviyoList.klaviyo_id == op.list_id))).first()
    assert row is not None and row.name == name


async def test_created_list_appears_in_the_table_without_a_reload(
    lists_env, run_worker_burst, sessionmaker, simulator_url
):
    client = lists_env
    name = unique("Shown at once ")
    op_id = _op_id(await post_form(client, "/lists/create", {"name": name}))
    assert await run_worker_burst(client.test_settings) >= 1
    # The operation card's last poll tells the page to redraw the table, which then holds the list.
    polled = await client.get(f"/lists/ops/{op_id}", headers={"HX-Request": "true"})
    assert polled.headers.get("HX-Trigger") == "lists-changed"
    page = await client.get("/lists/")
    assert 'hx-trigger="lists-changed from:body"' in page.text
    table = await client.get("/lists/table", headers={"HX-Request": "true"})
    assert table.status_code == 200 and name in table.text
    # A finished sync redraws the table too (lists made in Klaviyo appear without a reload).
    await post_form(client, "/lists/sync")
    assert await run_worker_burst(client.test_settings) >= 1
    synced = await client.get("/lists/sync/status", headers={"HX-Request": "true"})
    assert synced.headers.get("HX-Trigger") == "lists-changed"


async def test_no_consent_rows_are_skipped_not_failed_in_a_run(
    lists_env, run_worker_burst, sessionmaker, simulator_url, tmp_path
):
    """accepts_marketing "no" is a skip: not subscribed, not failed, never offered for retry."""
    client = lists_env
    list_id = await _create_list(client, run_worker_burst, sessionmaker, unique("Consent "))
    people = [
        {"email": f"{unique('yes')}@shop.test", "accepts_marketing": "yes", "tier": "gold"},
        {"email": f"{unique('no')}@shop.test", "accepts_marketing": "no", "tier": "gold"},
        {"email": f"{unique('yes')}@shop.test", "accepts_marketing": "Y", "tier": "bronze"},
        {"email": f"{unique('blank')}@shop.test", "accepts_marketing": "", "tier": "gold"},
    ]
    upload = await make_upload(sessionmaker, tmp_path, csv_text(people), "consent.csv")
    spec = Spec(
        name=unique("consent "),
        target=Target(kind=TargetKind.SUBSCRIPTION),
        fields=[column("email", "email", Email()), column("accepts_marketing", "consent.email")],
        filters=[RowFilter(column="tier", op="one_of", values=["gold", "silver"])],
    )
    mapping = await make_mapping(sessionmaker, spec)
    run_id = await _list_run(client, list_id, upload, mapping)
    assert await run_worker_burst(client.test_settings) >= 1
    run, errors = await _finished(sessionmaker, run_id)
    assert run.status == RunStatus.COMPLETED, run.error_message
    assert (run.items_sent, run.rows_failed, run.rows_skipped, run.rows_ok) == (1, 0, 3, 1)
    assert sorted((e.row_number, e.severity, e.rule) for e in errors) == [
        (2, "skipped", "skipped_no_consent"),
        (3, "skipped", "skipped_filter"),
        (4, "skipped", "skipped_no_consent"),
    ]
    assert run.summary["skips"] == {"skipped_no_consent": 2, "skipped_filter": 1}
    consent = sim_profile(simulator_url, people[0]["email"])["subscriptions"]["email"]["marketing"]
    assert consent["consent"] == "SUBSCRIBED"
    for person in people[1:]:
        assert sim_profile(simulator_url, person["email"]) is None
    members = set(sim_list(simulator_url, list_id)["members"])
    assert members == {sim_profile(simulator_url, people[0]["email"])["id"]}

    page = (await client.get(f"/runs/{run_id}")).text
    assert 'data-testid="rows-skipped"' in page and "2 skipped: no consent given" in page
    assert "1 skipped by filter" in page and "Retry" not in page
    csv_body = (await client.get(f"/runs/{run_id}/errors.csv")).text
    assert "skipped,mapping,accepts_marketing,skipped_no_consent,skipped: no consent given" in csv_body
    retry = await post_form(client, f"/runs/{run_id}/retry")
    assert retry.status_code in (400, 409, 422) or "no failed rows" in retry.text.lower()


async def test_list_picker_offers_synced_lists_and_creates_one_inline(
    lists_env, run_worker_burst, sessionmaker, simulator_url, tmp_path
):
    client = lists_env
    known = unique("Picked ")
    list_id = await _create_list(client, run_worker_burst, sessionmaker, known)
    upload = await make_upload(
        sessionmaker, tmp_path, csv_text([{"email": "p@shop.test", "phone": ""}]), "p.csv"
    )
    await make_mapping(sessionmaker, _subscription_spec())
    page = (await client.get(f"/uploads/{upload.id}")).text
    picker = page[page.index('data-testid="list-picker"') :]
    picker = picker[: picker.index("</select>")]
    assert f'<option value="{list_id}"' in picker and f"{known} · 0 members" in picker
    assert 'data-kinds="event order"' in page  # backfill only for events, hidden for catalog runs
    assert 'data-kinds="profile subscription list_membership"' in page

    fresh = unique("Inline ")
    made = await post_form(
        client, "/lists/picker/create", {"new_list_name": fresh, "picker_field": "list_id"}
    )
    assert made.status_code == 200 and 'data-testid="list-picker-creating"' in made.text
    poll = made.text.split('hx-get="', 1)[1].split('"', 1)[0]
    assert await run_worker_burst(client.test_settings) >= 1
    done = await client.get(poll.replace("&amp;", "&"))
    assert 'data-testid="list-picker-created"' in done.text
    new_id = next(
        kl["id"] for kl in httpx.get(f"{simulator_url}/__sim/lists").json()["data"] if kl["name"] == fresh
    )
    assert f'<option value="{new_id}" selected>{fresh} · 0 members' in done.text
