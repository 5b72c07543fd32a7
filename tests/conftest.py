"""Shared fixtures: real PostgreSQL / SQLite databases, real Redis, the simulator, app clients.

The environment is set before anything imports the app, so no test reads a developer's .env.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.update(
    ENVIRONMENT="test",
    SECRET_KEY="test-secret-key-that-is-long-enough-0123456789",
    LOG_LEVEL="WARNING",
)
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379")
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ["REDIS_URL"]
ARTIFACTS = ROOT / "test-artifacts"

from litestar import Litestar  # noqa: E402
from litestar.testing import AsyncTestClient  # noqa: E402

from config.settings import Settings  # noqa: E402
from models import Role  # noqa: E402
from models.db import make_engine, make_sessionmaker  # noqa: E402
from tests.support.databases import create_postgres_database, drop_postgres_database  # noqa: E402
from tests.support.web import login, make_user  # noqa: E402
from web.app import create_app  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until the URL answers (any status below 500), or fail with the process's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextlib.contextmanager
def migrated_postgres() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database, dropped on exit."""
    url = create_postgres_database(TEST_DATABASE_URL, f"kc_test_{uuid.uuid4().hex[:10]}")
    from cli.migrate import migrate

    assert migrate(url) == 0
    try:
        yield url
    finally:
        drop_postgres_database(TEST_DATABASE_URL, url)


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
        environment="test",
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
async def _fresh_login_throttle(queue_name: str) -> AsyncIterator[None]:
    """Tests log in from one address; one test's failed logins must not lock out the next test."""
    yield
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


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def as_role(client: AsyncTestClient[Litestar], sessionmaker: Any) -> Any:
    """Log the client in as a new user of the given role; returns the user."""

    async def _as(role: Role) -> Any:
        user = await make_user(sessionmaker, unique(role.value), role)
        response = await login(client, user.username)
        assert response.status_code == 302, response.text
        return user

    return _as
