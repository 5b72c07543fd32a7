"""Starting runs through the web app when a dependency is away: errors, not 500s."""

from __future__ import annotations

from litestar.testing import AsyncTestClient
from sqlmodel import select

from models import Role, RunStatus, SyncRun
from tests.conftest import unique
from tests.support.runs import csv_text, make_mapping, make_upload, order_rows, ordered_product_spec
from tests.support.web import login, make_user, post_form
from web.app import create_app


async def test_a_run_started_while_redis_is_down_is_saved_and_said_to_start_later(
    settings, sessionmaker, tmp_path
):
    upload = await make_upload(sessionmaker, tmp_path, csv_text(order_rows(3)))
    mapping = await make_mapping(sessionmaker, ordered_product_spec(unique("Redis away ")))
    app = create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1", "upload_dir": tmp_path}))
    async with AsyncTestClient(app) as client:
        operator = await make_user(sessionmaker, unique("op"), Role.OPERATOR)
        assert (await login(client, operator.username)).status_code == 302
        form = {"upload_id": str(upload.id), "mapping_id": str(mapping.id), "backfill": "1"}
        started = await post_form(client, "/runs/", form, follow_redirects=False)
        assert started.status_code == 303, started.text
        page = await client.get(started.headers["location"])
    assert page.status_code == 200
    assert "the job queue (Redis) is unreachable: it will start by itself" in page.text
    async with sessionmaker() as db:
        made = (await db.exec(select(SyncRun).where(SyncRun.upload_id == upload.id))).all()
    # One run, queued in the database: the reconciler hands it to a worker once Redis is back.
    assert [r.status for r in made] == [RunStatus.QUEUED]
    assert started.headers["location"] == f"/runs/{made[0].id}"
