"""The outbound-URL guard against real loopback servers: every form of an internal address is refused
before a byte is sent, redirects and next-page links are checked like the first URL, the feed's auth
header stays on its own origin, and error bodies are not echoed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from sync import outbound
from sync.feeds import FeedError, FeedSpec, FeedState, fetch_feed

NOTHING = outbound.AllowList()


class _Server:
    """A loopback HTTP server: answers from ``routes`` (path -> (status, headers, body)), records
    every request with its headers."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.requests.append({"path": self.path, "headers": dict(self.headers)})
                status, headers, body = server.routes.get(self.path.split("?")[0], (404, {}, b"no"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


@contextmanager
def server() -> Iterator[_Server]:
    srv = _Server()
    try:
        yield srv
    finally:
        srv.http.shutdown()
        srv.http.server_close()


REFUSED_FORMS = [
    "http://127.0.0.1:{port}/feed",
    "http://2130706433:{port}/feed",  # 127.0.0.1 as one decimal number
    "http://0x7f.1:{port}/feed",  # hexadecimal, short form
    "http://127.1:{port}/feed",
    "http://[::1]:{port}/feed",
    "http://[::ffff:127.0.0.1]:{port}/feed",  # IPv4-mapped IPv6
    "http://localhost:{port}/feed",  # a DNS name that resolves to loopback
]


@pytest.mark.parametrize("form", REFUSED_FORMS)
async def test_loopback_in_any_form_is_refused_before_a_request_is_sent(form: str) -> None:
    with server() as srv:
        srv.routes["/feed"] = (200, {"Content-Type": "application/json"}, b"[]")
        url = form.format(port=srv.port)
        problem = await outbound.url_problem(url, NOTHING, "feed URL")
        assert problem is not None and "loopback" in problem and "OUTBOUND_ALLOW" in problem
        async with outbound.client(NOTHING) as http:
            with pytest.raises(FeedError, match="Refused page 1.*loopback"):
                await fetch_feed(http, FeedSpec(url=url), FeedState())
            with pytest.raises(outbound.OutboundRefused):
                await http.post(url, json={"event": "x"})
        assert srv.requests == []


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://169.254.169.254/computeMetadata/v1/", "cloud metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata"),
        ("http://169.254.1.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://10.0.0.8/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[fc00::1]/", "private"),
        ("http://100.64.0.1/", "reserved"),  # carrier-grade NAT
        ("http://224.0.0.1/", "multicast"),
        ("http://0.0.0.0/", "reserved"),
        ("http://240.0.0.1/", "reserved"),
        ("http://[64:ff9b::7f00:1]/", "loopback"),  # NAT64 of 127.0.0.1
        ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
    ],
)
async def test_internal_addresses_are_refused_by_kind(url: str, kind: str) -> None:
    problem = await outbound.url_problem(url, NOTHING, "webhook URL")
    assert problem is not None and kind in problem


async def test_public_addresses_pass_and_the_allow_list_opens_only_what_it_names() -> None:
    assert await outbound.url_problem("https://93.184.215.14/feed", NOTHING) is None
    allow = outbound.AllowList.parse("10.2.0.0/16, feeds.internal *.corp.example")
    assert await outbound.url_problem("http://10.2.3.4/feed", allow) is None
    assert "private" in (await outbound.url_problem("http://10.3.0.1/feed", allow) or "")
    assert allow.allows_host("feeds.internal") and allow.allows_host("a.corp.example")
    assert not allow.allows_host("corp.example.evil")
    # Metadata stays refused even inside an allowed network.
    wide = outbound.AllowList.parse("169.254.0.0/16")
    assert "metadata" in (await outbound.url_problem("http://169.254.169.254/", wide) or "")
    with pytest.raises(ValueError, match="OUTBOUND_ALLOW"):
        outbound.AllowList.parse("10.0.0.0/8, not a/host")


async def test_a_redirect_from_an_allowed_host_to_a_refused_one_is_refused() -> None:
    """``localhost`` is allowed by name; its redirect to 127.0.0.1 (not allowed) must not be
    followed, and the feed's auth header goes to its own origin only."""
    with server() as home, server() as inside:
        inside.routes["/secret"] = (200, {"Content-Type": "application/json"}, b'[{"internal": 1}]')
        home.routes["/feed"] = (302, {"Location": f"http://127.0.0.1:{inside.port}/secret"}, b"")
        spec = FeedSpec(url=f"http://localhost:{home.port}/feed", headers={"X-Api-Key": "k-123"})
        async with outbound.client(outbound.AllowList.parse("localhost")) as http:
            with pytest.raises(FeedError, match="Refused page 1.*127.0.0.1 is a loopback address"):
                await fetch_feed(http, spec, FeedState())
        assert [r["path"] for r in home.requests] == ["/feed"]
        assert home.requests[0]["headers"].get("X-Api-Key") == "k-123"
        assert inside.requests == []


async def test_redirects_are_followed_within_the_allow_list_without_the_auth_header_abroad() -> None:
    with server() as home, server() as other:
        other.routes["/data"] = (200, {"Content-Type": "application/json"}, b'[{"id": 1}]')
        home.routes["/feed"] = (302, {"Location": f"http://127.0.0.1:{other.port}/data"}, b"")
        spec = FeedSpec(url=f"http://127.0.0.1:{home.port}/feed", headers={"X-Api-Key": "k-123"})
        async with outbound.client(outbound.AllowList.parse("127.0.0.1")) as http:
            fetched = await fetch_feed(http, spec, FeedState())
        assert fetched.records == [{"id": 1}]
        assert "X-Api-Key" not in other.requests[0]["headers"]  # another origin: no auth header


async def test_a_next_page_link_to_a_refused_host_is_refused() -> None:
    with server() as home, server() as inside:
        inside.routes["/page2"] = (200, {"Content-Type": "application/json"}, b'{"records": [{"n": 2}]}')
        page1 = {"records": [{"n": 1}], "next": f"http://[::ffff:127.0.0.1]:{inside.port}/page2"}
        home.routes["/feed"] = (200, {"Content-Type": "application/json"}, json.dumps(page1).encode())
        spec = FeedSpec(
            url=f"http://localhost:{home.port}/feed", records_path="records", next_page_path="next"
        )
        async with outbound.client(outbound.AllowList.parse("localhost")) as http:
            with pytest.raises(FeedError, match="Refused page 2.*loopback"):
                await fetch_feed(http, spec, FeedState())
        assert inside.requests == []


async def test_an_error_answer_shows_its_status_line_only() -> None:
    with server() as srv:
        srv.routes["/feed"] = (500, {"Content-Type": "text/plain"}, b"db password=hunter2 at 10.0.0.5")
        async with outbound.client(outbound.AllowList.parse("127.0.0.1")) as http:
            with pytest.raises(FeedError) as failed:
                await fetch_feed(http, FeedSpec(url=f"http://127.0.0.1:{srv.port}/feed"), FeedState())
    assert "HTTP 500" in str(failed.value)
    assert "hunter2" not in str(failed.value) and "10.0.0.5" not in str(failed.value)


async def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name that resolved to a public address at save time and to loopback now (rebinding) is
    refused at connection time: the guard resolves once per connection and connects to that answer."""
    with server() as srv:
        srv.routes["/feed"] = (200, {}, b"[]")
        calls: list[str] = []

        async def rebinding(host: str, port: int) -> list[outbound.IPAddress]:
            calls.append(host)
            return [outbound.ipaddress.ip_address("127.0.0.1")]

        monkeypatch.setattr(outbound, "resolve", rebinding)
        async with outbound.client(NOTHING) as http:
            with pytest.raises(httpx.ConnectError, match="feeds.example resolves to a loopback"):
                await http.get(f"http://feeds.example:{srv.port}/feed")
        assert calls == ["feeds.example"] and srv.requests == []
