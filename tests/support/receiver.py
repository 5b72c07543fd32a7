"""A webhook receiver on loopback: records every POST (headers and body), and can fail the next N."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    fail_next: int = 0  # answer this many POSTs with a 500
    posts: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextmanager
def receiver() -> Iterator[tuple[str, Received]]:
    """``(url, state)`` of a receiver running in a thread until the block ends."""
    state = Received()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with state.lock:
                failing = state.fail_next > 0
                if failing:
                    state.fail_next -= 1
                state.posts.append({"headers": dict(self.headers), "body": body, "ok": not failing})
            self.send_response(500 if failing else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/consent-hook", state
    finally:
        server.shutdown()
        server.server_close()
