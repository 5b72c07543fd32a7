"""Every area renders in the layout; errors render as pages, never as tracebacks."""

from __future__ import annotations

import pytest
from litestar import get

from models import Role

AREAS = ["/", "/connection", "/mappings", "/uploads", "/runs", "/lists", "/schedules", "/audit"]


@pytest.mark.parametrize("url", AREAS)
async def test_every_area_renders_with_navigation(client, as_role, url):
    await as_role(Role.VIEWER)
    response = await client.get(url)
    assert response.status_code == 200
    for label in ("Overview", "Connection", "Mappings", "Uploads", "Runs", "Lists", "Schedules"):
        assert f">{label}</a>" in response.text
    assert "/static/vendor/htmx.min.js" in response.text and "https://" not in response.text.split("<body")[0]


async def test_404_is_a_page_in_the_layout(client, as_role):
    await as_role(Role.VIEWER)
    response = await client.get("/no-such-page", headers={"accept": "text/html"})
    assert response.status_code == 404
    assert "Page not found" in response.text and "Sync Console" in response.text


async def test_500_shows_no_stack_trace(app, client, as_role):
    @get("/boom-for-test")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    app.register(boom)
    await as_role(Role.VIEWER)
    response = await client.get("/boom-for-test", headers={"accept": "text/html"})
    assert response.status_code == 500
    assert "Something went wrong" in response.text
    assert "secret internals" not in response.text and "Traceback" not in response.text


async def test_static_assets_are_served_locally(client):
    for path in ("/static/vendor/htmx.min.js", "/static/vendor/pico.min.css", "/static/app.css"):
        assert (await client.get(path)).status_code == 200


async def test_overview_shows_workers_and_queue(client, as_role, redis_client, settings):
    await as_role(Role.VIEWER)
    # Other tests' jobs (e.g. ingest wake-ups) may wait in the session queue: count from there.
    before = await redis_client.zcard(settings.queue_name)
    await redis_client.zadd(settings.queue_name, {"fake-job-for-depth": 1})
    try:
        page = await client.get("/overview/status")
    finally:
        await redis_client.zrem(settings.queue_name, "fake-job-for-depth")
    assert f'data-testid="queue-depth">{before + 1}<' in page.text
    assert "alive" in page.text


async def test_pages_are_served_as_html(client):
    response = await client.get("/login", follow_redirects=True)
    assert response.headers["content-type"].startswith("text/html")
