"""Schedules pages: create and edit with checked fields, next run times, run now, enable/disable,
delete, roles, and an audit entry for every action."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlmodel import col, func, select

from config.crypto import decrypt_secret
from models import AuditEvent, FeedRecordSeen, FeedSource, Role, Schedule, ScheduleTick, SyncRun, TickOutcome
from models.base import utcnow
from services import runs
from tests.support.env import unique
from tests.support.runs import make_mapping, make_upload, ordered_product_spec
from tests.support.web import post_form

SECRET = "Bearer feed-token-abcdef123456"


def _form(mapping_id: int, **fields: str) -> dict[str, str]:
    return {
        "name": unique("Orders feed "),
        "mapping_id": str(mapping_id),
        "url": "https://shop.test/orders.json",
        "format": "json",
        "records_path": "orders",
        "cursor_kind": "field",
        "cursor_field": "updated_at",
        "cursor_param": "updated_since",
        "timing": "cron",
        "cron": "*/15 * * * *",
        "auth_header_name": "Authorization",
        "auth_header_value": SECRET,
        **fields,
    }


async def test_the_schedules_page_links_real_time_ingest_and_viewers_cannot_write(
    client, as_role, sessionmaker
):
    await as_role(Role.VIEWER)
    page = await client.get("/schedules")
    assert page.status_code == 200
    assert 'href="/ingest"' in page.text and "Real-time ingest" in page.text
    assert "New schedule" not in page.text
    mapping = await make_mapping(sessionmaker, ordered_product_spec(unique("M ")))
    denied = await post_form(client, "/schedules/", _form(mapping.id))
    assert denied.status_code == 403


async def test_bad_fields_get_specific_messages_and_the_secret_is_not_echoed(client, as_role, sessionmaker):
    await as_role(Role.OPERATOR)
    mapping = await make_mapping(sessionmaker, ordered_product_spec(unique("M ")))
    answer = await post_form(
        client,
        "/schedules/",
        _form(mapping.id, cron="every monday", url="ftp://shop.test/feed", cursor_field=""),
    )
    assert answer.status_code == 400
    assert "Not a cron expression" in answer.text
    assert "must start with http:// or https://" in answer.text
    assert "Name the record field that grows" in answer.text
    assert SECRET not in answer.text and "feed-token" not in answer.text


async def test_create_shows_next_runs_then_run_now_and_disable(
    client, as_role, sessionmaker, settings, redis_client
):
    await as_role(Role.OPERATOR)
    mapping = await make_mapping(sessionmaker, ordered_product_spec(unique("M ")))
    form = _form(mapping.id)
    created = await post_form(client, "/schedules/", form, follow_redirects=False)
    assert created.status_code == 303, created.text
    url = created.headers["location"]
    schedule_id = int(url.rsplit("/", 1)[1])
    async with sessionmaker() as db:
        schedule = await db.get(Schedule, schedule_id)
        source = await db.get(FeedSource, schedule.source_id)
    assert schedule.cron == "*/15 * * * *" and schedule.next_run_at.minute % 15 == 0
    assert source.auth_header_encrypted and SECRET not in source.auth_header_encrypted

    detail = await client.get(url)
    assert detail.status_code == 200
    times = re.findall(r"<li>(\d{4}-\d\d-\d\d \d\d:(\d\d):00 UTC)</li>", detail.text)
    assert len(times) == 5 and all(int(minute) % 15 == 0 for _, minute in times)
    assert SECRET not in detail.text and "3456" in detail.text  # masked: the last four only
    assert form["name"] in (await client.get("/schedules")).text

    queued = await post_form(client, f"/schedules/{schedule_id}/run", {}, headers={"hx-request": "true"})
    assert queued.status_code == 200 and "A tick is queued" in queued.text
    # The tick really is queued for a worker; none runs here, so take it off the shared queue.
    jobs = [j.decode() for j in await redis_client.zrange(settings.queue_name, 0, -1)]
    mine = [j for j in jobs if j.startswith(f"{settings.queue_name}:schedule:{schedule_id}:manual:")]
    assert len(mine) == 1
    await redis_client.zrem(settings.queue_name, *mine)
    await redis_client.delete(*(f"arq:job:{j}" for j in mine))

    disabled = await post_form(client, f"/schedules/{schedule_id}/enabled", {"enabled": "0"})
    assert disabled.status_code == 200 and "Disabled: no ticks until it is enabled again." in disabled.text
    async with sessionmaker() as db:
        assert (await db.get(Schedule, schedule_id)).enabled is False


async def _created(client, sessionmaker, **fields: str) -> tuple[int, dict[str, str]]:
    mapping = await make_mapping(sessionmaker, ordered_product_spec(unique("M ")))
    form = _form(mapping.id, **fields)
    created = await post_form(client, "/schedules/", form, follow_redirects=False)
    assert created.status_code == 303, created.text
    return int(created.headers["location"].rsplit("/", 1)[1]), form


async def _edit_form(client, schedule_id: int) -> dict[str, str]:
    """The Edit page's fields as the browser would send them back untouched."""
    page = await client.get(f"/schedules/{schedule_id}/edit")
    assert page.status_code == 200
    fields = dict(re.findall(r'<input name="(\w+)"[^>]*?value="([^"]*)"', page.text))
    fields.update(
        re.findall(
            r'<select name="(\w+)"[^>]*>(?:(?!</select>).)*?<option value="([^"]*)" selected', page.text, re.S
        )
    )
    fields.pop("auth_header_value", None)
    return {**fields, "position": "keep"}


async def _ledger(sessionmaker, schedule_id: int) -> int:
    async with sessionmaker() as db:
        query = (
            select(func.count()).select_from(FeedRecordSeen).where(FeedRecordSeen.schedule_id == schedule_id)
        )
        return (await db.exec(query)).one()


async def _audit(sessionmaker, schedule_id: int) -> list[AuditEvent]:
    async with sessionmaker() as db:
        query = select(AuditEvent).where(AuditEvent.target == f"schedule #{schedule_id}")
        return list((await db.exec(query.order_by(col(AuditEvent.id)))).all())


async def test_edit_checks_fields_like_create_and_keeps_replaces_or_removes_the_auth_header(
    client, as_role, sessionmaker, settings
):
    await as_role(Role.OPERATOR)
    schedule_id, _ = await _created(client, sessionmaker)
    page = await client.get(f"/schedules/{schedule_id}/edit")
    assert "Leave empty to keep the stored value" in page.text and "3456" in page.text
    assert SECRET not in page.text and "feed-token" not in page.text
    form = await _edit_form(client, schedule_id)
    assert form["cron"] == "*/15 * * * *" and form["cursor_kind"] == "field" and form["format"] == "json"

    bad = await post_form(
        client,
        f"/schedules/{schedule_id}/edit",
        {
            **form,
            "cron": "every monday",
            "url": "ftp://shop.test/feed",
            "cursor_field": "",
            "retry_limit": "500",
            "auth_header_name": "",
            "auth_header_value": "Bearer new-secret-999",
        },
    )
    assert bad.status_code == 400
    for message in (
        "Not a cron expression",
        "must start with http:// or https://",
        "Name the record field that grows",
        "Retries are a whole number from 0 to 100.",
        "Give the auth header&#39;s name",
    ):
        assert message in bad.text, message
    assert "new-secret-999" not in bad.text and SECRET not in bad.text
    async with sessionmaker() as db:
        assert (await db.get(Schedule, schedule_id)).cron == "*/15 * * * *"  # nothing saved

    # Empty value: the stored header is kept, under a corrected name; timing changes move the next run.
    kept = await post_form(
        client,
        f"/schedules/{schedule_id}/edit",
        {
            **form,
            "name": "Renamed feed",
            "auth_header_name": "X-Feed-Token",
            "timing": "interval",
            "interval_minutes": "5",
        },
    )
    assert kept.status_code == 200 and "Saved Renamed feed." in kept.text
    async with sessionmaker() as db:
        schedule = await db.get(Schedule, schedule_id)
        source = await db.get(FeedSource, schedule.source_id)
    assert (schedule.name, schedule.cron, schedule.interval_minutes) == ("Renamed feed", None, 5)
    assert schedule.next_run_at <= utcnow() + timedelta(minutes=5, seconds=5)
    assert source.auth_header_name == "X-Feed-Token"
    assert decrypt_secret(settings.secret, source.auth_header_encrypted) == SECRET

    form = await _edit_form(client, schedule_id)
    await post_form(
        client, f"/schedules/{schedule_id}/edit", {**form, "auth_header_value": "Token zz-new-7777"}
    )
    async with sessionmaker() as db:
        source = await db.get(FeedSource, source.id)
        assert decrypt_secret(settings.secret, source.auth_header_encrypted) == "Token zz-new-7777"
    assert "7777" in (await client.get(f"/schedules/{schedule_id}")).text

    removed = await post_form(client, f"/schedules/{schedule_id}/edit", {**form, "auth_header_remove": "1"})
    assert removed.status_code == 200
    async with sessionmaker() as db:
        source = await db.get(FeedSource, source.id)
    assert (source.auth_header_name, source.auth_header_encrypted, source.auth_header_hint) == (
        None,
        None,
        None,
    )

    edits = [e for e in await _audit(sessionmaker, schedule_id) if e.action == "schedule.edit"]
    assert len(edits) == 3
    assert {"name", "cron", "interval_minutes", "auth_header_name"} <= set(edits[0].detail["changed"])
    assert edits[1].detail["changed"] == ["auth_header (new value)"]
    assert "auth_header (removed)" in edits[2].detail["changed"]
    assert not any("zz-new" in str(e.detail) or "feed-token" in str(e.detail) for e in edits)


async def test_changing_the_feed_keeps_the_position_unless_told_to_start_over(client, as_role, sessionmaker):
    await as_role(Role.OPERATOR)
    schedule_id, _ = await _created(client, sessionmaker)
    async with sessionmaker() as db:
        schedule = await db.get(Schedule, schedule_id)
        schedule.cursor_value = "2026-01-05T10:00:00Z"
        db.add(schedule)
        db.add_all(
            FeedRecordSeen(schedule_id=schedule_id, record_key=f"{n:064}", digest="d") for n in range(3)
        )
        await db.commit()
    page = await client.get(f"/schedules/{schedule_id}/edit")
    assert "from updated_at 2026-01-05T10:00:00Z on" in page.text and "forget the 3 records" in page.text
    form = await _edit_form(client, schedule_id)

    kept = await post_form(
        client, f"/schedules/{schedule_id}/edit", {**form, "url": "https://shop.test/v2/orders.json"}
    )
    assert (
        "Position kept: the next tick asks for records from updated_at 2026-01-05T10:00:00Z on" in kept.text
    )
    assert "the 3 records already taken are not sent again" in kept.text
    async with sessionmaker() as db:
        assert (await db.get(Schedule, schedule_id)).cursor_value == "2026-01-05T10:00:00Z"
    assert await _ledger(sessionmaker, schedule_id) == 3

    rekeyed = await post_form(client, f"/schedules/{schedule_id}/edit", {**form, "key_field": "id"})
    assert "The record key changed" in rekeyed.text

    # Not while a tick is fetching: it would write its mark over the reset when it finished.
    async with sessionmaker() as db:
        schedule = await db.get(Schedule, schedule_id)
        schedule.tick_until = utcnow() + timedelta(minutes=5)
        db.add(schedule)
        await db.commit()
    busy = await post_form(client, f"/schedules/{schedule_id}/edit", {**form, "position": "restart"})
    assert busy.status_code == 400 and 'data-testid="problem-position"' in busy.text
    assert "A tick is fetching right now" in busy.text
    async with sessionmaker() as db:
        schedule = await db.get(Schedule, schedule_id)
        schedule.tick_until = None
        db.add(schedule)
        await db.commit()

    restarted = await post_form(client, f"/schedules/{schedule_id}/edit", {**form, "position": "restart"})
    assert "Started over" in restarted.text and "3 records already taken are forgotten" in restarted.text
    async with sessionmaker() as db:
        schedule = await db.get(Schedule, schedule_id)
    assert (schedule.cursor_value, schedule.page_cursor) == (None, None)
    assert await _ledger(sessionmaker, schedule_id) == 0
    positions = [
        e.detail["position"] for e in await _audit(sessionmaker, schedule_id) if e.action == "schedule.edit"
    ]
    assert positions == ["kept", "kept", "restarted"]


async def test_delete_asks_first_removes_ticks_and_ledger_keeps_runs_and_every_action_is_audited(
    client, as_role, sessionmaker, settings, redis_client
):
    await as_role(Role.OPERATOR)
    schedule_id, form = await _created(client, sessionmaker)
    async with sessionmaker() as db:
        schedule = await db.get(Schedule, schedule_id)
        source_id = schedule.source_id
    upload = await make_upload(sessionmaker, settings.upload_dir, "email,total\na@x.test,1\n")
    async with sessionmaker() as db:
        run = await runs.create_run(
            db, upload_id=upload.id, mapping_id=schedule.mapping_id, dry_run=False, backfill=True, user=None
        )
        await db.flush()
        db.add(ScheduleTick(schedule_id=schedule_id, outcome=TickOutcome.QUEUED_RUN, run_id=run.id))
        db.add(FeedRecordSeen(schedule_id=schedule_id, record_key="k" * 64, digest="d"))
        await db.commit()

    await post_form(client, f"/schedules/{schedule_id}/enabled", {"enabled": "0"})
    await post_form(client, f"/schedules/{schedule_id}/enabled", {"enabled": "1"})
    await post_form(client, f"/schedules/{schedule_id}/run", {}, headers={"hx-request": "true"})
    jobs = [j.decode() for j in await redis_client.zrange(settings.queue_name, 0, -1)]
    mine = [j for j in jobs if j.startswith(f"{settings.queue_name}:schedule:{schedule_id}:")]
    await redis_client.zrem(settings.queue_name, *mine)
    await redis_client.delete(*(f"arq:job:{j}" for j in mine))

    confirm = await client.get(f"/schedules/{schedule_id}/delete")
    assert confirm.status_code == 200
    assert "1 recorded tick" in confirm.text and "ledger of 1 record" in confirm.text
    assert f'href="/runs/{run.id}"' in confirm.text and "Its run stays in run history" in confirm.text
    unconfirmed = await post_form(client, f"/schedules/{schedule_id}/delete", {})
    assert unconfirmed.status_code == 400
    async with sessionmaker() as db:
        assert await db.get(Schedule, schedule_id) is not None

    # While a tick holds the schedule, it cannot be deleted under it.
    async with sessionmaker() as db:
        schedule = await db.get(Schedule, schedule_id)
        schedule.tick_owner, schedule.tick_until = "worker", utcnow() + timedelta(minutes=5)
        db.add(schedule)
        await db.commit()
    busy = await post_form(client, f"/schedules/{schedule_id}/delete", {"confirm": "1"})
    assert busy.status_code == 409 and "fetching right now" in busy.text
    async with sessionmaker() as db:
        schedule = await db.get(Schedule, schedule_id)
        schedule.tick_owner, schedule.tick_until = None, None
        db.add(schedule)
        await db.commit()

    deleted = await post_form(client, f"/schedules/{schedule_id}/delete", {"confirm": "1"})
    assert deleted.status_code == 200 and "its runs stay in run history" in deleted.text
    assert f'href="/schedules/{schedule_id}"' not in deleted.text  # gone from the list
    async with sessionmaker() as db:
        assert await db.get(Schedule, schedule_id) is None
        assert await db.get(FeedSource, source_id) is None
        ticks = await db.exec(select(ScheduleTick).where(ScheduleTick.schedule_id == schedule_id))
        assert ticks.all() == []
        assert (await db.get(SyncRun, run.id)) is not None
    assert await _ledger(sessionmaker, schedule_id) == 0
    assert (await client.get(f"/schedules/{schedule_id}")).status_code == 404

    actions = [e.action for e in await _audit(sessionmaker, schedule_id)]
    assert actions == [
        "schedule.create",
        "schedule.disable",
        "schedule.enable",
        "schedule.run_now",
        "schedule.delete",
    ]
    log = await client.get("/audit/", params={"action": "schedule."})
    assert log.status_code == 200
    for action in actions:
        assert action in log.text
    assert f"schedule #{schedule_id}" in log.text and "runs_kept=1" in log.text


async def test_viewers_cannot_open_edit_or_delete(client, as_role, sessionmaker):
    await as_role(Role.OPERATOR)
    schedule_id, form = await _created(client, sessionmaker)
    await as_role(Role.VIEWER)
    assert (await client.get(f"/schedules/{schedule_id}/edit")).status_code == 403
    assert (await client.get(f"/schedules/{schedule_id}/delete")).status_code == 403
    assert (await post_form(client, f"/schedules/{schedule_id}/delete", {"confirm": "1"})).status_code == 403
    assert (await post_form(client, f"/schedules/{schedule_id}/edit", form)).status_code == 403
    detail = await client.get(f"/schedules/{schedule_id}")
    assert 'data-testid="edit"' not in detail.text and 'data-testid="delete"' not in detail.text


async def test_a_feed_url_on_an_internal_address_is_refused_and_the_allow_list_is_shown(
    client, as_role, sessionmaker
):
    await as_role(Role.OPERATOR)
    mapping = await make_mapping(sessionmaker, ordered_product_spec(unique("M ")))
    for url, kind in [
        ("http://169.254.169.254/computeMetadata/v1/instance", "cloud metadata"),
        ("http://10.0.0.7/orders.json", "private"),
        ("http://[::ffff:192.168.0.1]/orders.json", "private"),
        ("http://167772161/orders.json", "private"),  # 10.0.0.1 as one decimal number
    ]:
        answer = await post_form(client, "/schedules/", _form(mapping.id, url=url))
        assert answer.status_code == 400, url
        assert f"is a {kind} address" in answer.text and "OUTBOUND_ALLOW" in answer.text
    async with sessionmaker() as db:
        stored = (await db.exec(select(FeedSource).where(col(FeedSource.url).contains("169.254")))).all()
    assert stored == []
    page = await client.get("/schedules/new")
    assert "127.0.0.1/32" in page.text  # the test settings' OUTBOUND_ALLOW, shown where URLs are typed
