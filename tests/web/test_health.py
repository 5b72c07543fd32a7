"""Health and readiness probes."""

from __future__ import annotations

from litestar.testing import AsyncTestClient

from web.app import create_app


async def test_healthz_and_readyz(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == ["database: ok", "redis: ok"]


async def test_readyz_reports_redis_down(settings):
    app = create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1"}))
    async with AsyncTestClient(app) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"][0] == "database: ok"
    assert ready.json()["checks"][1].startswith("redis: ")


async def test_readyz_reports_unmigrated_database(settings, sqlite_url, tmp_path):
    from cli.migrate import migrate  # noqa: F401  (the fixture db is migrated; this one is not)

    empty = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    app = create_app(settings.model_copy(update={"database_url": empty}))
    async with AsyncTestClient(app) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert "database" in ready.json()["checks"][0]
