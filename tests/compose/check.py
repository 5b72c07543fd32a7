"""`make compose-check`: build the image from the Dockerfile and run compose.yaml's services in podman.

Each service runs as compose.yaml declares it (command, environment, volumes, user, healthcheck),
from the image the real Dockerfile builds. What a machine without Docker cannot give is stood in
for, and printed: host networking (so the web and simulator ports are free ports, rewritten in
commands, URLs and healthchecks, and service names resolve to 127.0.0.1), the machine's PostgreSQL
with a fresh database in place of the postgres service, and a private redis-server running the
redis service's own command on a free port. The base image is a Debian stand-in (debootstrap, made
once and kept in podman's store) unless BASE_IMAGE names one.

Proves: the volume mount paths exist in the image and belong to its user; migrate runs once and
exits 0; web answers /readyz; every worker's healthcheck passes; an upload through web lands in
the uploads volume; three worker containers send three runs at once through one rate limiter to
the simulator container (no 429, nothing twice); a restart of every container mid-run loses
nothing; the README's backup and restore bring the runs and uploads back after a wipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import fcntl
import hashlib
import io
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from cli.dev import installed_redis_server
from sync.mapping import DateParse, Email, FieldRule, NumberCast, Target, TargetKind, TemplateSource, column
from sync.mapping import Mapping as Spec
from tests.compose import spec as compose_spec
from tests.support.databases import create_postgres_database, drop_postgres_database

ROOT = compose_spec.ROOT
CONF = Path(__file__).with_name("containers.conf")
STANDIN = "localhost/kc-python-standin:3.11-bookworm"
ADMIN_DB = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
WORKERS = 3
ROWS_PER_RUN = 6_000  # six bulk requests of 1,000 events per run
# The run sent across a restart: at Klaviyo's steady 150 requests/min it outlasts the restart.
ROWS_ACROSS_RESTART = 40_000
ADMIN = ("admin", "compose check password 1")

# The README's backup and restore of the uploads volume, run in a container of the app image
# (tool_run stands for TOOL_RUN) ...
TOOL_RUN = 'docker compose run --rm --no-deps --user root -v "$PWD:/backup" web'
BACKUP_UPLOADS = "tar -C /data/uploads -czf /backup/uploads.tgz ."
RESTORE_UPLOADS = "tar -C /data/uploads -xzf /backup/uploads.tgz"
# ... and of PostgreSQL, run on the machine against this run's database (for PG_EXEC).
PG_EXEC = "docker compose exec -T postgres"
PG_DUMP = "pg_dump -U console -d console -Fc"
PG_RESTORE = "pg_restore -U console -d console --clean --if-exists --no-owner"


class CheckFailed(Exception):
    """A proof did not hold; the message says which and why."""


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run podman with the check's own containers.conf."""
    env = {**os.environ, "CONTAINERS_CONF": str(CONF)}
    result = subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise CheckFailed(
            f"podman {' '.join(args[:3])} ... exited {result.returncode}: {result.stderr[-2000:]}"
        )
    return result


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    started = time.monotonic()
    print(f"== {title}", flush=True)
    yield
    print(f"   ok ({time.monotonic() - started:.1f}s)", flush=True)


def wait_until(what: str, probe: Callable[[], bool], timeout: float, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise CheckFailed(f"{what}: not within {timeout:.0f}s")
        time.sleep(every)


# ------------------------------------------------------------------ images


def base_image() -> str:
    """BASE_IMAGE if given; else the Debian stand-in, made once (under a lock) and then reused."""
    if os.environ.get("BASE_IMAGE"):
        return os.environ["BASE_IMAGE"]
    with open("/tmp/kc-compose-standin.lock", "w") as lock:  # noqa: S108
        fcntl.flock(lock, fcntl.LOCK_EX)
        if podman("image", "exists", STANDIN, check=False).returncode != 0:
            make_standin()
        else:
            print(f"   base image: {STANDIN} (already in podman's store)")
    return STANDIN


def make_standin() -> None:
    """python:3.11-slim's stand-in from Debian packages: python, pip, and this machine's CA bundle."""
    if shutil.which("debootstrap") is None:
        raise CheckFailed(
            "no base image: install debootstrap (apt-get install debootstrap) or set BASE_IMAGE"
        )
    mirror = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
    bundle = Path(os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
    with tempfile.TemporaryDirectory(prefix="kc-standin-", dir="/var/tmp") as tmp:  # noqa: S108
        rootfs = Path(tmp) / "rootfs"
        print(f"   base image: debootstrap bookworm from {mirror} ...", flush=True)
        packages = "python3,python3-pip,python-is-python3,ca-certificates"
        result = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={packages}", "bookworm", str(rootfs), mirror],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise CheckFailed(f"debootstrap failed: {result.stdout[-1500:]}{result.stderr[-1500:]}")
        # The official image's pip installs system-wide; Debian's refuses (PEP 668) unless told.
        for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        # Builds reach PyPI through this machine's trust store (it may hold a proxy's CA).
        shutil.copyfile(bundle, rootfs / "etc/ssl/certs/ca-certificates.crt")
        shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
            'CMD ["python3"]',
        ]
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        args = ["podman", "import", *[a for c in changes for a in ("--change", c)], "-", STANDIN]
        imported = subprocess.run(
            args,
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            env={**os.environ, "CONTAINERS_CONF": str(CONF)},
            check=False,
        )
        tar.wait()
        if imported.returncode != 0:
            raise CheckFailed(f"podman import failed: {imported.stderr[-1500:]}")
    print(f"   base image: made {STANDIN}")


def build_image(compose: dict[str, Any], tag: str, base: str) -> None:
    """The project image, from the Dockerfile compose.yaml's app services build."""
    build = compose["services"]["web"]["build"]
    context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile = context / ("Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile"))
    podman(
        "build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}",
        "-t", tag, "-f", str(dockerfile), str(context), timeout=900,
    )  # fmt: skip


def keep_as_build_cache(tag: str) -> None:
    """Keep the last image built under one tag, so the next check reuses its dependency layers,
    and drop the one it replaces (with the layers nothing else uses)."""
    cache = f"localhost/{compose_spec.APP_IMAGE}:compose-check"

    def image_id(name: str) -> str:
        return podman("image", "inspect", "-f", "{{.Id}}", name, check=False).stdout.strip()

    old = image_id(cache)
    if podman("tag", tag, cache, check=False).returncode == 0:
        podman("untag", tag, tag, check=False)  # with no name, untag would drop every name
        if old and old != image_id(cache):
            podman("rmi", old, check=False)
    else:
        podman("rmi", "-f", tag, check=False)


def check_mount_points(compose: dict[str, Any], image: str) -> None:
    """Every volume target exists in the image and belongs to the user the service runs as.

    Docker creates a missing mount point owned by root (podman hands it to the container's user,
    which hides the defect), so a non-root service could not write to its own volume.
    """
    image_user = podman("image", "inspect", "-f", "{{.Config.User}}", image).stdout.strip() or "root"
    problems: dict[str, list[str]] = {}
    for name in compose_spec.app_services(compose):
        svc = compose["services"][name]
        user = str(svc.get("user") or image_user)
        for source, target in compose_spec.volume_mounts(svc):
            got = podman(
                "run", "--rm", "--network", "host", image, "stat", "-c", "%U %u %A", target, check=False
            )
            if got.returncode != 0:
                problem = (
                    f"{target} (volume {source}) does not exist in the image: Docker would create it "
                    f"owned by root, and {user} could not write to it"
                )
            else:
                owner, uid, mode = got.stdout.split()
                if user in {owner, uid} and mode[2] == "w":
                    continue
                problem = (
                    f"{target} (volume {source}) is {mode} {owner} in the image: {user} cannot write to it"
                )
            problems.setdefault(problem, []).append(name)
    if problems:
        raise CheckFailed("; ".join(f"{p} (services {', '.join(names)})" for p, names in problems.items()))
    print(f"   volume mount points exist in the image and belong to {image_user}")


# ------------------------------------------------------------------ the stack


class Stack:
    """compose.yaml's services as podman containers on host networking."""

    def __init__(self, compose: dict[str, Any], image: str, db_url: str, work: Path) -> None:
        self.compose, self.image, self.db_url, self.work = compose, image, db_url, work
        self.prefix = f"kc-check-{uuid.uuid4().hex[:6]}"
        self.ports = {8000: free_port(), 8100: free_port(), 6379: free_port()}
        # What `${VAR}` in compose.yaml sees: a `.env` holding only SECRET_KEY, as README's first start.
        self.env = {"SECRET_KEY": secrets.token_urlsafe(48)}
        self.containers: dict[str, str] = {}  # container -> service
        self.volumes: set[str] = set()
        self.redis: subprocess.Popen[bytes] | None = None

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[8000]}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[8100]}"

    def remap(self, text: str) -> str:
        """Container ports to this run's free host ports, in URLs, flags and code."""
        if text.isdigit() and int(text) in self.ports:
            return str(self.ports[int(text)])
        return re.sub(r":(8000|8100|6379)\b", lambda m: f":{self.ports[int(m[1])]}", text)

    def volume(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        if full not in self.volumes:
            podman("volume", "create", full)
            self.volumes.add(full)
        return full

    def environment(self, service: str) -> dict[str, str]:
        env = {
            k: self.remap(v)
            for k, v in compose_spec.environment(self.compose["services"][service], self.env).items()
        }
        if "DATABASE_URL" in env:
            env["DATABASE_URL"] = self.db_url
        return env

    def mounts(self, service: str) -> list[str]:
        args = []
        for source, target in compose_spec.volume_mounts(self.compose["services"][service]):
            args += [
                "-v",
                f"{self.volume(source)}:{target}"
                if source in self.compose.get("volumes", {})
                else f"{source}:{target}",
            ]
        return args

    def run(self, service: str, name: str | None = None) -> str:
        """Start one container of the service (`--scale` replicas get their own names)."""
        svc = self.compose["services"][service]
        ctr = f"{self.prefix}-{name or service}"
        args = ["run", "--name", ctr, "--hostname", ctr, "--network", "host"]
        args += [a for host in self.compose["services"] for a in ("--add-host", f"{host}:127.0.0.1")]
        args += [a for k, v in self.environment(service).items() for a in ("-e", f"{k}={v}")]
        args += self.mounts(service)
        if svc.get("user"):
            args += ["--user", str(svc["user"])]
        command = [self.remap(str(a)) for a in svc.get("command") or []]
        podman(*args, "-d", self.image, *command)
        self.containers[ctr] = service
        return ctr

    def exit_code(self, ctr: str, timeout: float = 180) -> int:
        return int(podman("wait", ctr, timeout=timeout).stdout.strip())

    def healthcheck(self, ctr: str) -> subprocess.CompletedProcess[str]:
        svc = self.compose["services"][self.containers[ctr]]
        command = compose_spec.healthcheck_command(svc)
        assert command, f"{self.containers[ctr]} declares no healthcheck"
        timeout = compose_spec.seconds(svc["healthcheck"].get("timeout", "30s"))
        return podman("exec", ctr, *[self.remap(a) for a in command], check=False, timeout=timeout + 5)

    def wait_healthy(self, ctr: str) -> None:
        """Poll the service's own healthcheck, for as long as compose would (interval x retries)."""
        check = self.compose["services"][self.containers[ctr]]["healthcheck"]
        budget = compose_spec.seconds(check.get("interval", "30s")) * int(check.get("retries", 3))
        budget += compose_spec.seconds(check.get("start_period", 0))
        wait_until(f"{ctr} healthy", lambda: self.healthcheck(ctr).returncode == 0, budget, every=1)

    def start_redis(self) -> None:
        """The redis service's own command, on this run's port, keeping its append-only file here."""
        command = [str(a) for a in self.compose["services"]["redis"]["command"]]
        if command[0] == "redis-server":  # the machine's (Redis 7, as compose's image), not the venv's 6.2
            command[0] = installed_redis_server() or command[0]
        port = str(self.ports[6379])
        self.redis = subprocess.Popen(
            [*command, "--port", port, "--bind", "127.0.0.1", "--dir", str(self.work)],
            stdout=subprocess.DEVNULL,
        )
        ping = ["redis-cli", "-p", port, "ping"]  # the redis service's healthcheck
        wait_until("redis healthy", lambda: subprocess.run(ping, capture_output=True).returncode == 0, 20)

    def stop_redis(self) -> None:
        if self.redis and self.redis.poll() is None:
            self.redis.terminate()
            self.redis.wait(timeout=20)

    def logs(self) -> str:
        out = []
        for ctr in self.containers:
            got = podman("logs", "--tail", "15", ctr, check=False)
            out.append(f"--- {ctr}\n{got.stdout[-3000:]}{got.stderr[-3000:]}")
        return "\n".join(out)

    def remove(self, *ctrs: str) -> None:
        for ctr in ctrs or list(self.containers):
            podman("rm", "-f", "-t", "5", ctr, check=False)
            self.containers.pop(ctr, None)

    def close(self) -> None:
        self.remove()
        for volume in self.volumes:
            podman("volume", "rm", "-f", volume, check=False)
        self.stop_redis()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ the console over HTTP


def sql(db_url: str, query: str, *args: Any) -> list[Any]:
    async def _go() -> list[Any]:
        conn = await asyncpg.connect(make_url(db_url).set(drivername="postgresql").render_as_string(False))
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(_go())


def console(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30)


def form(client: httpx.Client, path: str, data: dict[str, str]) -> httpx.Response:
    return client.post(path, data={**data, "_csrf_token": client.cookies["kc_csrf"]})


def first_admin(client: httpx.Client) -> None:
    client.get("/setup")
    username, password = ADMIN
    got = form(client, "/setup", {"username": username, "password": password, "password_confirm": password})
    if got.status_code != 302:
        raise CheckFailed(f"creating the first admin answered {got.status_code}")


def log_in(client: httpx.Client) -> None:
    client.get("/login")
    got = form(client, "/login", {"username": ADMIN[0], "password": ADMIN[1]})
    if got.status_code != 302:
        raise CheckFailed(f"logging in answered {got.status_code}")


def import_mapping(client: httpx.Client, metric: str) -> int:
    spec = Spec(
        name="compose check orders",
        target=Target(kind=TargetKind.EVENT, metric=metric),
        fields=[
            column("Email", "email", Email()),
            column("Created at", "time", DateParse()),
            column("Price", "value", NumberCast()),
            column("Name", "properties.OrderId"),
            FieldRule(source=TemplateSource(template="{Name}"), target="unique_id"),
        ],
    )
    got = form(client, "/mappings/import", {"json": spec.model_dump_json()})
    if got.status_code != 303:
        raise CheckFailed(f"importing the mapping answered {got.status_code}")
    return int(got.headers["location"].rsplit("/", 1)[1])


def orders_csv(start: int, rows: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["Name", "Email", "Created at", "Price"])
    for n in range(start, start + rows):
        writer.writerow(
            [f"#{n}", f"buyer{n % 997}@shop.test", f"2025-03-{1 + n % 28:02d}T10:00:00Z", f"{n % 90}.50"]
        )
    return out.getvalue().encode()


def upload(client: httpx.Client, body: bytes, name: str) -> int:
    got = client.post(
        f"/uploads/?name={name}",
        content=body,
        headers={
            "x-csrftoken": client.cookies["kc_csrf"],
            "content-type": "application/octet-stream",
            "accept": "application/json",
        },
    )
    if got.status_code != 201:
        raise CheckFailed(f"uploading {name} through web answered {got.status_code}: {got.text[:300]}")
    return int(got.json()["id"])


def start_run(client: httpx.Client, upload_id: int, mapping_id: int) -> int:
    got = form(
        client, "/runs/", {"upload_id": str(upload_id), "mapping_id": str(mapping_id), "backfill": "1"}
    )
    if got.status_code != 303:
        raise CheckFailed(f"starting a run answered {got.status_code}: {got.text[:300]}")
    return int(got.headers["location"].rsplit("/", 1)[1])


def sim_stats(stack: Stack, metric: str) -> tuple[int, dict[str, Any]]:
    stored = httpx.get(f"{stack.sim_url}/__sim/events", params={"metric": metric, "limit": 0}).json()["count"]
    return int(stored), httpx.get(f"{stack.sim_url}/__sim/stats").json()


def taken(stack: Stack, run_id: int) -> bool:
    """A worker took the run (its lease is held, or it already ran)."""
    row = sql(stack.db_url, "SELECT status, lease_owner FROM sync_runs WHERE id = $1", run_id)[0]
    return bool(row["lease_owner"]) or row["status"] not in {"draft", "ready", "queued"}


def logs(ctr: str) -> str:
    got = podman("logs", ctr, check=False)
    return got.stdout + got.stderr


def wait_runs(stack: Stack, run_ids: list[int], events: int, timeout: float = 180) -> list[Any]:
    """Wait until the runs finish; each must have completed with every event sent."""

    def finished() -> bool:
        rows = sql(stack.db_url, "SELECT status FROM sync_runs WHERE id = ANY($1)", run_ids)
        return all(r["status"] in {"completed", "failed", "cancelled"} for r in rows)

    wait_until(f"runs {run_ids} finished", finished, timeout, every=1)
    rows = sql(
        stack.db_url,
        "SELECT id, status, items_sent, error_message FROM sync_runs WHERE id = ANY($1) ORDER BY id",
        run_ids,
    )
    for row in rows:
        if row["status"] != "completed" or row["items_sent"] != events:
            raise CheckFailed(
                f"run {row['id']}: {row['status']}, {row['items_sent']} sent ({row['error_message']})"
            )
    return rows


def volume_file(stack: Stack, volume: str, path: str) -> bytes:
    """A file in a named volume, read through a container of the app image (as compose mounts it)."""
    got = subprocess.run(
        ["podman", "run", "--rm", "--network", "host", "-v", f"{volume}:/data/uploads", stack.image,
         "cat", f"/data/uploads/{path}"],
        capture_output=True, env={**os.environ, "CONTAINERS_CONF": str(CONF)}, check=False,
    )  # fmt: skip
    if got.returncode != 0:
        raise CheckFailed(f"{path} is not in the uploads volume: {got.stderr.decode()[-300:]}")
    return got.stdout


# ------------------------------------------------------------------ the check


def main() -> int:
    started = time.monotonic()
    compose = compose_spec.load()
    tag = f"localhost/{compose_spec.APP_IMAGE}:check-{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="kc-compose-check-"))
    db_url = create_postgres_database(ADMIN_DB, f"kc_compose_{uuid.uuid4().hex[:8]}")
    stack = Stack(compose, tag, db_url, work)
    try:
        with step("image: the Dockerfile, on its base image"):
            base = base_image()
            build_image(compose, tag, base)
            check_mount_points(compose, tag)
        print(f"   stand-ins: PostgreSQL database {make_url(db_url).database} on the machine's server; "
              f"redis-server on :{stack.ports[6379]}; web :8000 -> :{stack.ports[8000]}, "
              f"simulator :8100 -> :{stack.ports[8100]} (host networking)")  # fmt: skip
        scenario(stack)
    except CheckFailed as exc:
        print(f"\ncompose-check FAILED: {exc}", file=sys.stderr)
        print(stack.logs(), file=sys.stderr)
        return 1
    finally:
        stack.close()
        keep_as_build_cache(tag)
        drop_postgres_database(ADMIN_DB, db_url)
        shutil.rmtree(work, ignore_errors=True)
    print(f"compose-check passed in {time.monotonic() - started:.0f}s")
    return 0


def scenario(stack: Stack) -> None:
    metric = f"Compose Check {uuid.uuid4().hex[:4]}"
    with step("redis (its compose command) and migrate: runs once, exits 0"):
        stack.start_redis()
        migrate = stack.run("migrate")
        if (code := stack.exit_code(migrate)) != 0:
            raise CheckFailed(f"migrate exited {code}")
        head = sql(stack.db_url, "SELECT version_num FROM alembic_version")
        print(f"   migrate exited 0; database at {head[0]['version_num']}")

    workers = [f"worker-{n}" for n in range(1, WORKERS + 1)]
    with step(f"web, simulator and {WORKERS} workers (--scale worker={WORKERS}) healthy"):
        web = stack.run("web")
        sim = stack.run("simulator")
        ctrs = [stack.run("worker", name) for name in workers]
        for ctr in [web, sim, *ctrs]:
            stack.wait_healthy(ctr)
        ready = httpx.get(f"{stack.web_url}/readyz")
        if ready.status_code != 200:
            raise CheckFailed(f"/readyz answered {ready.status_code}: {ready.text}")
        # The worker healthcheck looks for this container's own heartbeat: in web it must fail.
        worker_check = compose_spec.healthcheck_command(stack.compose["services"]["worker"]) or []
        if podman("exec", web, *worker_check, check=False).returncode == 0:
            raise CheckFailed("the worker healthcheck passes in the web container, where no worker runs")
        print(f"   /readyz 200: {ready.json()['checks']}")

    client = console(stack.web_url)
    with step("an upload through web is stored in the uploads volume"):
        first_admin(client)
        mapping_id = import_mapping(client, metric)
        bodies = [orders_csv(i * ROWS_PER_RUN, ROWS_PER_RUN) for i in range(WORKERS)]
        bodies.append(orders_csv(WORKERS * ROWS_PER_RUN, ROWS_ACROSS_RESTART))
        upload_ids = [upload(client, body, f"orders-{i}.csv") for i, body in enumerate(bodies)]
        wait_until(
            "uploads analysed by a worker",
            lambda: all(
                r["status"] == "ready"
                for r in sql(stack.db_url, "SELECT status FROM uploads WHERE id = ANY($1)", upload_ids)
            ),
            60,
        )
        uploads_volume = f"{stack.prefix}-uploads"
        stored = sql(stack.db_url, "SELECT id, stored_as, sha256 FROM uploads ORDER BY id")
        for row, body in zip(stored, bodies, strict=True):
            if (
                hashlib.sha256(volume_file(stack, uploads_volume, row["stored_as"])).hexdigest()
                != row["sha256"]
            ):
                raise CheckFailed(f"upload {row['id']} in the volume differs from what was sent")
        print(f"   {len(stored)} uploads in volume {uploads_volume}, their sha256 as recorded")

    with step(f"{WORKERS} runs on {WORKERS} worker containers at once, one rate limiter"):
        run_ids = []
        for ctr, upload_id in zip(ctrs, upload_ids, strict=False):
            # arq hands a job to whichever worker polls first; the others are paused for a
            # moment so that each worker container takes one run.
            others = [c for c in ctrs if c != ctr]
            podman("pause", *others)
            try:
                run_id = start_run(client, upload_id, mapping_id)
                wait_until(
                    f"run {run_id} taken by {ctr}", lambda rid=run_id: taken(stack, rid), 30, every=0.2
                )
            finally:
                podman("unpause", *others)
            run_ids.append(run_id)
        wait_runs(stack, run_ids, ROWS_PER_RUN)
        for ctr, run_id in zip(ctrs, run_ids, strict=True):
            if not re.search(
                rf'"run ended".*"run_id": ?{run_id}\b|"run_id": ?{run_id}\b.*"run ended"', logs(ctr)
            ):
                raise CheckFailed(f"run {run_id} was not sent by {ctr}")
        spans = sql(stack.db_url, "SELECT started_at, finished_at FROM sync_runs WHERE id = ANY($1)", run_ids)
        overlap = (min(r["finished_at"] for r in spans) - max(r["started_at"] for r in spans)).total_seconds()
        if overlap <= 0:
            raise CheckFailed(f"the runs did not overlap ({overlap:.1f}s): start them faster")
        events, stats = sim_stats(stack, metric)
        requests = sum(stats["requests"].get("POST /api/event-bulk-create-jobs", {}).values())
        expect = WORKERS * ROWS_PER_RUN
        if events != expect or stats["rate_limited"] or stats["duplicates"]:
            raise CheckFailed(
                f"simulator holds {events} of {expect} events; 429s {stats['rate_limited']}, "
                f"duplicates {stats['duplicates']}"
            )
        print(
            f"   runs {run_ids}, one per worker container, all sending for {overlap:.1f}s: "
            f"{expect} events in {requests} bulk requests, 0 429s, 0 duplicates"
        )

    with step("restart every container mid-run: nothing lost"):
        run_id = start_run(client, upload_ids[-1], mapping_id)
        wait_until(
            f"run {run_id} sending",
            lambda: (
                sql(stack.db_url, "SELECT items_sent FROM sync_runs WHERE id = $1", run_id)[0]["items_sent"]
                > 0
            ),
            60,
            every=0.2,
        )
        stack.stop_redis()
        stack.start_redis()
        podman("stop", "-t", "10", web, *ctrs)
        at_stop = sql(stack.db_url, "SELECT status, items_sent FROM sync_runs WHERE id = $1", run_id)[0]
        if at_stop["status"] != "running":
            raise CheckFailed(f"run {run_id} was {at_stop['status']} when its worker stopped; make it longer")
        podman("start", web, *ctrs)
        for ctr in [web, *ctrs]:
            stack.wait_healthy(ctr)
        wait_runs(stack, [run_id], ROWS_ACROSS_RESTART, timeout=240)
        events, stats = sim_stats(stack, metric)
        if events != WORKERS * ROWS_PER_RUN + ROWS_ACROSS_RESTART:
            raise CheckFailed(f"after the restart the simulator holds {events} events")
        print(f"   run {run_id} was stopped at {at_stop['items_sent']} of {ROWS_ACROSS_RESTART} events sent "
              f"and finished after the restart; the simulator holds every event once "
              f"({stats['duplicates']} resent in-flight events dropped by unique_id)")  # fmt: skip
        podman("restart", "-t", "10", sim)
        stack.wait_healthy(sim)
        runs = sql(stack.db_url, "SELECT count(*) AS n FROM sync_runs WHERE status = 'completed'")[0]["n"]
        # The session cookie outlives the restarts too (it is signed with SECRET_KEY, not kept in memory).
        page = client.get(f"/runs/{run_id}")
        if runs != WORKERS + 1 or page.status_code != 200:
            raise CheckFailed(
                f"after restarting everything: {runs} completed runs, run page {page.status_code}"
            )

    with step("backup (README), wipe, restore: runs and uploads are back"):
        backup_dir = stack.work / "backup"
        backup_dir.mkdir()
        dump = backup_dir / "console.dump"
        with dump.open("wb") as out:
            subprocess.run([*_pg(PG_DUMP, stack.db_url)], stdout=out, check=True)
        tool_run(stack, backup_dir, BACKUP_UPLOADS)
        before = sql(stack.db_url, "SELECT id, status, items_sent FROM sync_runs ORDER BY id")
        # Wipe: every container down, the uploads volume and the database gone.
        stack.remove()
        podman("volume", "rm", "-f", uploads_volume)
        stack.volumes.discard(uploads_volume)
        drop_postgres_database(ADMIN_DB, stack.db_url)
        create_postgres_database(ADMIN_DB, make_url(stack.db_url).database or "")
        stack.volume("uploads")
        with dump.open("rb") as source:
            restore = subprocess.run(
                _pg(PG_RESTORE, stack.db_url), stdin=source, capture_output=True, check=False
            )
        if restore.returncode != 0:
            raise CheckFailed(f"pg_restore: {restore.stderr.decode()[-500:]}")
        tool_run(stack, backup_dir, RESTORE_UPLOADS)
        migrate = stack.run("migrate", "migrate-again")
        if (code := stack.exit_code(migrate)) != 0:
            raise CheckFailed(f"migrate after the restore exited {code}")
        web = stack.run("web")
        stack.wait_healthy(web)
        after = sql(stack.db_url, "SELECT id, status, items_sent FROM sync_runs ORDER BY id")
        if [tuple(r) for r in after] != [tuple(r) for r in before]:
            raise CheckFailed(f"runs after the restore {after} differ from before {before}")
        for row in sql(stack.db_url, "SELECT id, stored_as, sha256 FROM uploads ORDER BY id"):
            if (
                hashlib.sha256(volume_file(stack, uploads_volume, row["stored_as"])).hexdigest()
                != row["sha256"]
            ):
                raise CheckFailed(f"upload {row['id']} did not come back from the backup")
        client = console(stack.web_url)
        log_in(client)
        page = client.get(f"/uploads/{upload_ids[0]}")
        if page.status_code != 200:
            raise CheckFailed(f"upload page after the restore answered {page.status_code}")
        print(f"   {len(after)} runs and {len(upload_ids)} uploads back; the admin logs in")


def _pg(command: str, db_url: str) -> list[str]:
    """The README's pg_dump / pg_restore line, pointed at this run's database instead of `console`."""
    url = make_url(db_url)
    args = command.split()
    args[args.index("-U") + 1] = url.username or "postgres"
    args[args.index("-d") + 1] = url.database or ""
    return [*args, "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)]


def tool_run(stack: Stack, backup_dir: Path, command: str) -> None:
    """`docker compose run --rm --no-deps --user root -v "$PWD:/backup" web <command>`."""
    args = ["run", "--rm", "--network", "host", "--user", "root", "-v", f"{backup_dir}:/backup"]
    podman(*args, *stack.mounts("web"), stack.image, "sh", "-c", command)


if __name__ == "__main__":
    sys.exit(main())
