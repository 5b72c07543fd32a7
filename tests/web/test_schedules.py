"""Schedules pages: create with checked fields, next run times, run now, enable/disable, roles."""

from __future__ import annotations

import re

from models import FeedSource, Role, Schedule
from tests.conftest import unique
from tests.support.runs import make_mapping, ordered_product_spec
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
