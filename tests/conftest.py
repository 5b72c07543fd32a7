"""Shared fixtures: real PostgreSQL / SQLite databases, real Redis, the simulator, app clients.

The environment is set before anything imports the app, so no test reads a developer's .env.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

# First: the environment is set before anything imports the app.
from tests.support.env import REDIS_URL, ROOT, TEST_DATABASE_URL, unique

# Fixtures behind which an app on this session's settings may have counted failed logins in Redis.
LOGGING_IN = frozenset({"client", "app", "settings", "as_role"})
# Fixtures that need PostgreSQL, Redis, a simulator or a browser; a test using none of them is
# marked `fast` (`make test-fast` runs those with both services pointed at closed ports).
SERVICE_FIXTURES = frozenset(
    {
        "pg_url", "sqlite_url", "db_url", "simulator_url", "settings", "app", "client", "sessionmaker",
        "as_role", "redis", "redis_client", "prefix", "sim_server", "sim", "browser", "page",
        "live_server", "live_env", "browser_pg_url", "live_sessionmaker", "run_worker_burst",
    }
)  # fmt: skip
# Folders whose tests start processes or containers of their own.
SLOW_FOLDERS = ("browser", "cli", "compose")

from litestar import Litestar  # noqa: E402
from litestar.testing import AsyncTestClient  # noqa: E402

from config.settings import Environment, Settings  # noqa: E402
from models import Role  # noqa: E402
from models.db import make_engine, make_sessionmaker  # noqa: E402
from tests.support.databases import (  # noqa: E402
    acreate_postgres_database,
    adrop_postgres_database,
    migrated_postgres,
)
from tests.support.processes import free_port, wait_for_http  # noqa: E402
from tests.support.web import login, make_user  # noqa: E402
from web.app import create_app  # noqa: E402


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session, dropped at the end."""
    with migrated_postgres() as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh, migrated SQLite database file."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'console.db'}"
    from cli.migrate import migrate

    assert migrate(url) == 0
    return url


@pytest.fixture(scope="session", params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The DB layer runs against both backends."""
    return str(request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url"))


@pytest.fixture(scope="session")
def queue_name() -> str:
    """A queue of this session's own, so a stray worker never takes a test's jobs."""
    return f"arq:test:{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def simulator_url() -> Iterator[str]:
    """The Klaviyo simulator as a real process on a free port (limits on, time-scaled). It checks
    every answer against Klaviyo's spec; any found outside it fails the session at the end."""
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port), "--time-scale", "20", "--check-answers"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/__sim/stats", proc=proc)
        yield url
        problems = httpx.get(f"{url}/__sim/conformance", timeout=10).json()["problems"]
        if problems:
            pytest.fail("the simulator answered outside Klaviyo's spec:\n" + "\n".join(problems))
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def settings(pg_url: str, queue_name: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for in-process apps and workers; tests that send to the simulator set sandbox_url."""
    return Settings(
        environment=Environment.TEST,
        database_url=pg_url,
        redis_url=REDIS_URL,
        queue_name=queue_name,
        upload_dir=tmp_path_factory.mktemp("uploads"),
        # A burst worker waits for deferred jobs: the automatic check of Klaviyo is left to the
        # tests about it (tests/workers/test_verify_run.py).
        verify_auto=False,
    )


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
async def _fresh_login_throttle(request: pytest.FixtureRequest, queue_name: str) -> AsyncIterator[None]:
    """Tests log in from one address; one test's failed logins must not lock out the next test."""
    yield
    if not LOGGING_IN & set(request.fixturenames):
        return  # only an app on this session's settings can have counted a failed login
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"{queue_name}:login:fail:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def redis_client() -> AsyncIterator[object]:
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


# ---- web app fixtures (the real app on the session's PostgreSQL database and Redis)


@pytest.fixture(scope="session")
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@pytest.fixture(scope="session")
async def sessionmaker(settings: Settings) -> AsyncIterator[Any]:
    engine = make_engine(settings.database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app) as test_client:
        yield test_client


@pytest.fixture
def as_role(client: AsyncTestClient[Litestar], sessionmaker: Any) -> Any:
    """Log the client in as a new user of the given role; returns the user."""

    async def _as(role: Role) -> Any:
        user = await make_user(sessionmaker, unique(role.value), role)
        response = await login(client, user.username)
        assert response.status_code == 302, response.text
        return user

    return _as


@pytest.fixture
async def fresh(settings):
    """(client logged in as admin, sessionmaker, settings) on a database of this test's own."""
    from cli.migrate import migrate

    url = await acreate_postgres_database(TEST_DATABASE_URL, f"kc_status_{uuid.uuid4().hex[:10]}")
    assert await asyncio.to_thread(migrate, url) == 0
    # Other suites sharing this Redis fail logins from the test client's address on purpose; a high
    # failure limit keeps their lockouts from reaching these tests.
    test_settings = settings.model_copy(update={"database_url": url, "login_max_failures": 10_000})
    engine = make_engine(url)
    maker = make_sessionmaker(engine)
    try:
        async with AsyncTestClient(create_app(test_settings)) as client:
            admin = await make_user(maker, unique("admin"), Role.ADMIN)
            assert (await login(client, admin.username)).status_code == 302
            yield client, maker, test_settings
    finally:
        await engine.dispose()
        await adrop_postgres_database(TEST_DATABASE_URL, url)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that need no service as `fast`."""
    for item in items:
        folder = Path(str(item.path)).relative_to(ROOT / "tests").parts[0]
        names = set(getattr(item, "fixturenames", ()))
        if (
            folder not in SLOW_FOLDERS
            and not names & SERVICE_FIXTURES
            and not item.get_closest_marker("services")
        ):
            item.add_marker(pytest.mark.fast)
