"""Request/response types and pagination shared by the app and the handlers."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from simulator.config import Account, SimConfig
from simulator.state import AccountState, SimulatorState
from simulator.validation import Problem, error


@dataclass
class Request:
    """What a handler needs from one HTTP request."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    base_url: str
    params: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""
    body: Any = None
    account: Account | None = None
    acct: AccountState | None = None
    state: SimulatorState | None = None
    config: SimConfig | None = None
    maybe_long_string: bool | None = None

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Response:
    """A handler's answer; ``body`` None means no body (202/204)."""

    status: int
    body: Any = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


def encode_cursor(offset: int) -> str:
    """An opaque page[cursor] value."""
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The offset a page[cursor] stands for (0 when absent); Problem(400) when garbled."""
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return max(0, int(text.removeprefix("o:")))
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, [error(400, "invalid", "Invalid page[cursor]", pointer=None)]) from None


def paginate(
    req: Request, items: list[Any], default_size: int, max_size: int | None = None
) -> tuple[list[Any], dict[str, Any]]:
    """One page of ``items`` and the JSON:API links (next holds the full URL with page[cursor])."""
    size = default_size
    asked = req.arg("page[size]")
    if asked is not None:
        if max_size is None:
            # Klaviyo refuses page[size] where the operation has none (e.g. GET /api/metrics).
            resource = req.path.rstrip("/").rsplit("/", 1)[-1].removesuffix("s")
            detail = f"'page_size' is not a valid field for the resource '{resource}'."
            raise Problem(400, [error(400, "invalid", detail, parameter="page[size]")])
        if not asked.isdigit() or not 1 <= int(asked) <= max_size:
            detail = f"page[size] must be between 1 and {max_size}"
            raise Problem(400, [error(400, "invalid", detail, parameter="page[size]")])
        size = int(asked)
    offset = decode_cursor(req.arg("page[cursor]"))
    page = items[offset : offset + size]
    base = f"{req.base_url}{req.path}"

    def url(cursor_offset: int | None) -> str:
        query = {k: v[0] for k, v in req.query.items() if k != "page[cursor]"}
        if cursor_offset is not None:
            query["page[cursor]"] = encode_cursor(cursor_offset)
        return f"{base}?{urlencode(query)}" if query else base

    # The spec types links.next and links.prev as URI strings (CollectionLinks): absent, not null,
    # when there is no such page.
    links: dict[str, Any] = {"self": url(offset or None)}
    if offset + size < len(items):
        links["next"] = url(offset + size)
    if offset > 0:
        links["prev"] = url(max(0, offset - size) or None)
    return page, links


async def read_body(receive: Any, limit: int) -> bytes:
    """An ASGI request's body, refused with a 413 as soon as it passes ``limit`` bytes."""
    chunks: list[bytes] = []
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Problem(413, [error(413, "too_large", f"Request body is larger than {limit} bytes")])
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)
