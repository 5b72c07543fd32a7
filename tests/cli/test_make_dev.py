"""`make dev` for real: migrate SQLite, start Redis if needed, web + worker + simulator; Ctrl-C stops all."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import redis

from tests.conftest import ROOT, free_port, wait_for_http


def _port_open(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
        return True
    except httpx.HTTPError:
        return False


def test_make_dev_serves_login_with_live_worker_and_stops_on_ctrl_c(tmp_path):
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
        print(f"make dev start-up: {startup_s:.1f}s")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert "dev: stopped" in output, output
    assert "private redis-server" in output
    assert not _port_open(web_port) and not _port_open(sim_port)
    try:
        redis.Redis(port=redis_port, socket_connect_timeout=0.5).ping()
        raise AssertionError("the private redis-server outlived make dev")
    except redis.ConnectionError:
        pass
