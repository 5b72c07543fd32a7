"""Run the simulator: in a background thread (SimulatorServer) or as a subprocess (SimulatorProcess)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from simulator.app import SimulatorApp
from simulator.config import SANDBOX_KEY, SimConfig
from simulator.state import SimulatorState

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def uvicorn_config(app: SimulatorApp, host: str, port: int, log_level: str = "warning") -> uvicorn.Config:
    """Uvicorn settings tuned for a test double: httptools, no access log, generous keep-alive."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        http="httptools",
        loop="asyncio",
        timeout_keep_alive=30,
        backlog=2048,
    )


class SimulatorServer:
    """The simulator on a free port in a background thread; use as a (sync or async) context manager."""

    def __init__(
        self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int | None = None
    ) -> None:
        self.config = config or SimConfig()
        self.state = SimulatorState(self.config)
        self.app = SimulatorApp(self.config, self.state)
        self.host = host
        self.port = port or free_port(host)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """e.g. http://127.0.0.1:54321 (set KLAVIYO_BASE_URL to this)."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_key(self) -> str:
        """The sandbox account's private key."""
        return SANDBOX_KEY

    def headers(self, key: str | None = None) -> dict[str, str]:
        """Klaviyo request headers for ``key`` (default: the sandbox key)."""
        return klaviyo_headers(key or SANDBOX_KEY)

    def start(self) -> SimulatorServer:
        """Start uvicorn and wait until it accepts connections."""
        self._server = uvicorn.Server(uvicorn_config(self.app, self.host, self.port))
        self._thread = threading.Thread(target=self._server.run, name="klaviyo-simulator", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("simulator did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def reset(self) -> None:
        """Clear stored data, counters and rate-limit windows (config stays)."""
        self.app.reset(limits=True)

    def complete_jobs(self) -> None:
        """Finish every pending bulk job now."""
        self.app.complete_jobs()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> SimulatorServer:
        # Starting takes a few milliseconds of blocking wait; fine inside tests.
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def klaviyo_headers(key: str = SANDBOX_KEY, revision: str = "2026-10-15") -> dict[str, str]:
    """The headers every Klaviyo request carries."""
    return {
        "Authorization": f"Klaviyo-API-Key {key}",
        "revision": revision,
        "accept": "application/vnd.api+json",
        "content-type": "application/vnd.api+json",
    }


class SimulatorProcess:
    """``python -m simulator`` in a subprocess on a free port, for tests whose workers run elsewhere.

    State is reachable only over HTTP (/__sim/...); ``admin()`` returns a client for it.
    """

    def __init__(
        self,
        time_scale: float = 1.0,
        no_limits: bool = False,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.args = [
            sys.executable,
            "-m",
            "simulator",
            "--host",
            host,
            "--port",
            str(self.port),
            "--time-scale",
            str(time_scale),
            *(["--no-limits"] if no_limits else []),
            *(extra_args or []),
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """e.g. http://127.0.0.1:54321."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> SimulatorProcess:
        """Spawn the process and wait until /__sim/health answers."""
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.proc = subprocess.Popen(self.args, cwd=str(REPO_ROOT), env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"simulator exited with code {self.proc.returncode}")
            try:
                if httpx.get(f"{self.base_url}/__sim/health", timeout=0.5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("simulator process did not answer in time")

    def stop(self) -> None:
        """Terminate the process (kill after 5 s)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def admin(self) -> httpx.Client:
        """A client for the /__sim admin API."""
        return httpx.Client(base_url=f"{self.base_url}/__sim", timeout=10)

    def configure(self, **changes: Any) -> dict[str, Any]:
        """POST /__sim/config with these changes."""
        with self.admin() as client:
            response = client.post("/config", json=changes)
            response.raise_for_status()
            return dict(response.json())

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
