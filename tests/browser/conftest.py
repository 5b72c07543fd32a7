"""Browser harness: the real app, a real worker and the simulator as processes; headless Chromium.

Screenshots land in test-artifacts/screens/ so a person can look at every page a test visits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from models import Role
from models.db import make_engine, make_sessionmaker
from tests.support.databases import migrated_postgres
from tests.support.env import ARTIFACTS, REDIS_URL, ROOT
from tests.support.processes import free_port, wait_for_http
from tests.support.web import make_user

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
SCREENS = ARTIFACTS / "screens"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def browser_pg_url() -> Iterator[str]:
    """The browser stacks' own database: their long-lived workers reconcile stale runs, and must
    never take over a run another test is driving on the shared session database."""
    with migrated_postgres() as url:
        yield url


@pytest.fixture(scope="session")
def live_env(browser_pg_url: str, simulator_url: str, queue_name: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": browser_pg_url,
        "REDIS_URL": REDIS_URL,
        "SANDBOX_URL": simulator_url,
        "KLAVIYO_BASE_URL": simulator_url,
        "QUEUE_NAME": f"{queue_name}:browser",
        "UPLOAD_DIR": str(ARTIFACTS / "uploads"),
        # The session's simulator runs 20x faster than Klaviyo; the limiter must know.
        "KLAVIYO_TIME_SCALE": "20",
        "RUN_LEASE_SECONDS": "5",
    }


@contextmanager
def serve(env: dict[str, str]) -> Iterator[str]:
    """uvicorn + one arq worker, as `make dev` runs them, on a free port; yields the base URL."""
    port = free_port()
    web = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "web.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
    )
    worker = subprocess.Popen([sys.executable, "-m", "workers"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", proc=web)
        yield url
    finally:
        for proc in (web, worker):
            proc.terminate()
        for proc in (web, worker):
            proc.wait(timeout=15)


@pytest.fixture(scope="session")
def live_server(live_env: dict[str, str]) -> Iterator[str]:
    """The session's console, shared by the browser tests."""
    with serve(live_env) as url:
        yield url


@pytest.fixture
def fresh_console(live_env: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    """A console of its own: an empty database, its own job queue (the session's worker must not
    take its jobs) and its own sandbox (its metrics must not show in other tests' accounts).
    Yields (its URL, the database URL, its sandbox URL)."""
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port), "--time-scale", "20"]
    sandbox = subprocess.Popen(
        [sys.executable, "-m", "simulator", *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    sim = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{sim}/__sim/stats", proc=sandbox)
        with migrated_postgres() as url:
            env = {
                **live_env,
                "DATABASE_URL": url,
                "QUEUE_NAME": f"{live_env['QUEUE_NAME']}:own:{uuid.uuid4().hex[:6]}",
                "SANDBOX_URL": sim,
                "KLAVIYO_BASE_URL": sim,
            }
            with serve(env) as server:
                yield server, url, sim
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium")
    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield instance
        await instance.close()


@pytest.fixture
async def page(browser: Browser, live_server: str) -> AsyncIterator[Page]:
    context = await browser.new_context(base_url=live_server, viewport={"width": 1280, "height": 800})
    new_page = await context.new_page()
    yield new_page
    await context.close()


@pytest.fixture(scope="session")
async def live_sessionmaker(browser_pg_url: str) -> AsyncIterator[Any]:
    engine = make_engine(browser_pg_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def user_factory(live_sessionmaker: Any) -> Any:
    async def _make(role: Role, name: str | None = None) -> Any:
        import uuid

        return await make_user(
            live_sessionmaker, name or f"{role.value}{uuid.uuid4().hex[:6]}", role, PASSWORD
        )

    return _make


async def log_in(page: Page, username: str, password: str = PASSWORD) -> None:
    await page.goto("/login")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")


async def screenshot(page: Page, name: str) -> Path:
    SCREENS.mkdir(parents=True, exist_ok=True)
    path = SCREENS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
