"""A store's feed as a real HTTP server on loopback: orders in pages, a CSV export, an XML catalog.

Tests change ``orders`` between ticks, make the next answers fail, and read what was requested.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit


@dataclass
class FeedState:
    orders: list[dict[str, Any]] = field(default_factory=list)
    products: list[dict[str, Any]] = field(default_factory=list)
    page_size: int = 2
    fail_next: int = 0  # answer this many requests with a 503
    token: str | None = None  # when set, requests need "Authorization: Bearer <token>"
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    state: FeedState

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        state = self.state
        with state.lock:
            state.requests.append(
                {"path": parts.path, "query": query, "auth": self.headers.get("Authorization")}
            )
            if state.fail_next > 0:
                state.fail_next -= 1
                return self._send(503, b"feed backend is down", "text/plain")
            if state.token and self.headers.get("Authorization") != f"Bearer {state.token}":
                return self._send(401, b"missing or wrong token", "text/plain")
            orders = list(state.orders)
            products = list(state.products)
            size = state.page_size
        if parts.path == "/orders.json":
            # Inclusive (>=) on purpose: the console must drop records at the boundary it already has.
            since = query.get("updated_since")
            chosen = [o for o in orders if not since or o["updated_at"] >= since]
            chosen.sort(key=lambda o: (o["updated_at"], o["order_id"]))
            start = int(query.get("offset", "0"))
            page = chosen[start : start + size]
            more = start + size < len(chosen)
            nxt = f"/orders.json?{urlencode({**query, 'offset': start + size})}" if more else None
            body = json.dumps({"orders": page, "next": nxt}).encode()
            return self._send(200, body, "application/json")
        if parts.path == "/orders.csv":
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=["order_id", "email", "total", "updated_at"])
            writer.writeheader()
            writer.writerows({k: o[k] for k in writer.fieldnames} for o in orders)
            return self._send(200, buffer.getvalue().encode(), "text/csv")
        if parts.path == "/catalog.xml":
            items = "".join(
                "<product>" + "".join(f"<{k}>{v}</{k}>" for k, v in p.items()) + "</product>"
                for p in products
            )
            return self._send(
                200, f"<?xml version='1.0'?><products>{items}</products>".encode(), "application/xml"
            )
        return self._send(404, b"no such feed", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class FeedServer:
    url: str
    state: FeedState


@contextmanager
def feed_server() -> Iterator[FeedServer]:
    """Serve a fresh FeedState on a free loopback port for the duration of the block."""
    state = FeedState()
    handler = type("FeedHandler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FeedServer(f"http://127.0.0.1:{server.server_address[1]}", state)
    finally:
        server.shutdown()
        server.server_close()


def order(n: int, updated_at: str, tag: str, total: str = "25.00") -> dict[str, Any]:
    """One order of the feed; its email and id carry the test's tag so tests never collide."""
    return {
        "order_id": f"{tag}-{n}",
        "email": f"buyer{n}-{tag}@shop.test",
        "total": total,
        "updated_at": updated_at,
    }
