"""compose.yaml checked statically, and its commands run as processes (compose-check runs containers)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from config.settings import Settings
from services.workers import heartbeat_pattern
from tests.compose import spec as compose_spec
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.env import REDIS_URL, ROOT, TEST_DATABASE_URL
from tests.support.processes import free_port, wait_for_http

COMPOSE = compose_spec.load()


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
    # compose.yaml's environment with its ${VAR}s filled in, as compose would from a .env.
    base = compose_spec.environment(COMPOSE["services"]["web"], {"SECRET_KEY": "from-the-dot-env"})
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


def test_compose_yaml_follows_the_compose_specification():
    assert compose_spec.problems(COMPOSE) == []
    # The same check refuses what `docker compose up` would refuse.
    typo = copy.deepcopy(COMPOSE)
    typo["services"]["worker"]["comand"] = typo["services"]["worker"].pop("command")
    assert "comand" in compose_spec.problems(typo)[0]
    condition = copy.deepcopy(COMPOSE)
    condition["services"]["web"]["depends_on"]["migrate"]["condition"] = "service_done"
    assert "service_done" in compose_spec.problems(condition)[0]
    volume = copy.deepcopy(COMPOSE)
    volume["services"]["web"]["volumes"] = ["upload:/data/uploads"]
    assert compose_spec.problems(volume) == ["services.web.volumes: upload is not declared under volumes"]


def test_readme_backup_and_restore_are_the_commands_compose_check_runs():
    from tests.compose import check

    readme = (ROOT / "README.md").read_text()
    for command in (
        f"{check.PG_EXEC} {check.PG_DUMP} > console.dump",
        f"{check.TOOL_RUN} {check.BACKUP_UPLOADS}",
        f"{check.PG_EXEC} {check.PG_RESTORE} < console.dump",
        f"{check.TOOL_RUN} {check.RESTORE_UPLOADS}",
    ):
        assert command in readme, command


def known_variables() -> set[str]:
    """The environment variables the settings read: each field's name (or alias), upper-cased."""
    names = set()
    for name, field in Settings.model_fields.items():
        aliases = [a for a in (field.alias, field.validation_alias) if isinstance(a, str)]
        names.update(n.upper() for n in [name, *aliases])
    return names


def test_every_variable_compose_sets_is_one_the_settings_read():
    known = known_variables()
    assert {"DATABASE_URL", "COOKIE_SECURE"} <= known
    assert compose_spec.unknown_variables(COMPOSE, known) == []
    typo = copy.deepcopy(COMPOSE)
    typo["services"]["web"]["environment"] = {
        **typo["services"]["web"]["environment"],
        "COOKIE_SECUR": "true",
    }
    assert compose_spec.unknown_variables(typo, known) == ["services.web.environment: COOKIE_SECUR"]


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


def _failed_logins(port: int, forwarded_for: list[str]) -> list[int]:
    """Wrong passwords for a new user each time, each request claiming another X-Forwarded-For."""
    statuses = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        client.get("/login")
        for n, address in enumerate(forwarded_for):
            answer = client.post(
                "/login",
                data={
                    "username": f"u{n}-{uuid.uuid4().hex[:6]}",
                    "password": "wrong",
                    "_csrf_token": client.cookies["kc_csrf"],
                },
                headers={"X-Forwarded-For": address},
            )
            statuses.append(answer.status_code)
    return statuses


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"])
def test_spoofed_forwarded_for_does_not_escape_login_throttling(env, trusted):
    """The web command as deployed, reached from loopback: X-Forwarded-For counts only when the
    peer is a trusted proxy, and then only its rightmost untrusted entry (the proxy's own)."""
    migrate = subprocess.run(_command("migrate"), env=env, cwd=ROOT, capture_output=True, timeout=120)
    assert migrate.returncode == 0
    port = free_port()
    queue = f"arq:xff:{uuid.uuid4().hex[:6]}"
    web_env = {**env, "LOGIN_MAX_FAILURES": "1", "QUEUE_NAME": queue, "TRUSTED_PROXIES": trusted}
    proc = subprocess.Popen(_command("web", port), env=web_env, cwd=ROOT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        # One address per address limit (4 failures for LOGIN_MAX_FAILURES=1), five tries.
        spoofed = [f"203.0.113.{n}" for n in range(1, 6)]
        if trusted:
            # Behind a proxy that appends the address it saw, after whatever the client sent.
            statuses = _failed_logins(port, [f"{fake}, 198.51.100.7" for fake in spoofed])
        else:
            statuses = _failed_logins(port, spoofed)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        client = redis.Redis.from_url(REDIS_URL)
        keys = client.keys(f"{queue}:login:fail:*")
        if keys:
            client.delete(*keys)
    assert statuses == [401, 401, 401, 401, 429]
