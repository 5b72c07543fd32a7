"""compose.yaml cannot run here (no Docker engine), so run its commands as local processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
import yaml

from services.workers import heartbeat_pattern
from tests.conftest import REDIS_URL, ROOT, TEST_DATABASE_URL, free_port, wait_for_http
from tests.support.databases import create_postgres_database, drop_postgres_database

COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())


def _command(service: str, port: int | None = None) -> list[str]:
    args = [str(a) for a in COMPOSE["services"][service]["command"]]
    args = ["127.0.0.1" if a == "0.0.0.0" else a for a in args]
    if port is not None:
        args = [str(port) if a in {"8000", "8100"} else a for a in args]
    if args[0] == "python":
        args[0] = sys.executable
    else:  # console scripts live beside the interpreter in the venv
        args[0] = str(Path(sys.executable).parent / args[0])
    return args


@pytest.fixture(scope="module")
def env():
    url = create_postgres_database(TEST_DATABASE_URL, f"kc_compose_{uuid.uuid4().hex[:8]}")
    base = {k: str(v) for k, v in COMPOSE["x-app"]["environment"].items()}
    base.update(
        DATABASE_URL=url,
        REDIS_URL=REDIS_URL,
        SECRET_KEY="compose-test-secret-0123456789abcdef",
        QUEUE_NAME=f"arq:compose:{uuid.uuid4().hex[:6]}",
        UPLOAD_DIR=str(ROOT / "test-artifacts" / "uploads"),
        LOG_JSON="true",
    )
    yield {**os.environ, **base, "PYTHONPATH": str(ROOT)}
    drop_postgres_database(TEST_DATABASE_URL, url)


def test_compose_declares_the_production_stack():
    services = COMPOSE["services"]
    assert {"postgres", "redis", "migrate", "web", "worker", "simulator"} <= set(services)
    assert services["simulator"]["profiles"] == ["sandbox"]
    for name in ("postgres", "redis", "web", "worker", "simulator"):
        assert "healthcheck" in services[name], name
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert COMPOSE["x-app"]["environment"]["ENVIRONMENT"] == "production"
    assert (ROOT / "Dockerfile").exists()


def test_compose_commands_come_up_healthy(env):
    migrate = subprocess.run(
        _command("migrate"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert migrate.returncode == 0, migrate.stderr

    web_port, sim_port = free_port(), free_port()
    procs = [
        subprocess.Popen(_command("web", web_port), env=env, cwd=ROOT),
        subprocess.Popen(_command("worker"), env=env, cwd=ROOT),
        subprocess.Popen(_command("simulator", sim_port), env=env, cwd=ROOT),
    ]
    try:
        wait_for_http(f"http://127.0.0.1:{web_port}/healthz", proc=procs[0])
        ready = httpx.get(f"http://127.0.0.1:{web_port}/readyz")
        assert ready.status_code == 200, ready.text
        wait_for_http(f"http://127.0.0.1:{sim_port}/__sim/stats", proc=procs[2])
        # The worker's own healthcheck command (what compose runs) passes once it beats.
        health = [sys.executable, "-m", "workers.healthcheck"]
        deadline = time.monotonic() + 20
        while subprocess.run(health, env=env, cwd=ROOT, capture_output=True).returncode != 0:
            assert procs[1].poll() is None, "worker exited"
            assert time.monotonic() < deadline, "worker never reported a heartbeat"
            time.sleep(0.5)
        beats = redis.Redis.from_url(REDIS_URL).keys(heartbeat_pattern(env["QUEUE_NAME"]))
        assert beats
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=15)


def test_production_mode_without_secret_key_fails_with_a_clear_message(env):
    bad = {**env, "SECRET_KEY": ""}
    result = subprocess.run(
        _command("migrate"), env=bad, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_unreachable_database_at_start_is_explained(env):
    bad = {**env, "DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none"}
    result = subprocess.run(
        _command("migrate"), env=bad, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "cannot reach the database" in result.stderr and "DATABASE_URL" in result.stderr


def test_worker_without_redis_says_how_to_fix_it(env):
    bad = {**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}"}
    result = subprocess.run(
        _command("worker"), env=bad, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "cannot reach Redis" in result.stderr and "REDIS_URL" in result.stderr


def test_web_with_unreachable_database_exits_with_a_clear_log_line(env):
    bad = {**env, "DATABASE_URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none"}
    result = subprocess.run(
        _command("web", free_port()), env=bad, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "database unreachable at start" in result.stderr and "DATABASE_URL" in result.stderr
