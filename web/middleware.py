"""Loads the logged-in user from the session cookie for every request."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from litestar.exceptions import PermissionDeniedException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from services import sessions

# A session idle longer than this is treated as expired, whatever the cookie's max-age says.
IDLE_TIMEOUT_SECONDS = 12 * 3600
# The ingest API authenticates with its own bearer tokens, never a session.
# So do the consent pull API and the receiver of Klaviyo's signed system webhooks.
MACHINE_APIS = ("/api/ingest/", "/api/klaviyo-webhooks/", "/api/consent-changes")
PUBLIC_PREFIXES = ("/static/", "/healthz", "/readyz", "/metrics", *MACHINE_APIS)


class AuthMiddleware(ASGIMiddleware):
    @staticmethod
    def should_bypass_for_scope(scope: Scope) -> bool:
        # Assets and probes need no user; skipping the DB lookup keeps them cheap.
        return scope["path"].startswith(PUBLIC_PREFIXES)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        scope["user"] = None
        session: dict[str, Any] = scope.get("session") or {}  # type: ignore[assignment]
        sid = session.get("sid")
        if sid is not None:
            seen = float(session.get("seen", 0))
            if time.time() - seen > IDLE_TIMEOUT_SECONDS:
                session.clear()
                session["expired"] = True
            else:
                # The session lives on the server: a cookie whose session was ended (logout, an
                # admin, a deactivation) no longer works, wherever it was copied to.
                async with scope["app"].state.sessionmaker() as db:
                    found = await sessions.find(db, str(sid))
                user = found[1] if found is not None else None
                if user is not None and user.is_active and session.get("pwv") == user.password_hash[-12:]:
                    scope["user"] = user
                    session["seen"] = time.time()
                else:
                    session.clear()
                    if found is None:
                        session["expired"] = True
        elif "uid" in session:
            session.clear()  # a cookie from before sessions lived on the server
        await next_app(scope, receive, send)


class ClientAddressMiddleware(ASGIMiddleware):
    """The client's real address in ``scope["client"]``: the connection's peer, unless the peer is a
    trusted proxy (TRUSTED_PROXIES); then the rightmost X-Forwarded-For entry that is not itself a
    trusted proxy (entries to its left were written by the client and prove nothing). Login
    throttling and the audit log key on this address."""

    def __init__(self, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> None:
        self.trusted = trusted

    def _trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.strip())
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        client = scope.get("client")
        if self.trusted and client and self._trusted(client[0]):
            forwarded = b",".join(v for k, v in scope["headers"] if k == b"x-forwarded-for").decode("latin-1")
            hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
            for hop in reversed(hops):
                if not self._trusted(hop):
                    scope["client"] = (hop, 0)
                    break
        await next_app(scope, receive, send)


# No inline scripts or styles, nothing from other sites, never framed. Pico draws its icons with
# data: SVGs in CSS, hence img-src data:.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


_ENCODED_HEADERS = [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]


async def security_headers(message: Message, scope: Scope) -> None:
    """Add the security headers to every answer (pages, partials, static files, errors, the API).
    Appended as they are: no handler sets them, and this runs on the ingest API's hot path."""
    if message["type"] == "http.response.start":
        message["headers"] = [*message.get("headers", ()), *_ENCODED_HEADERS]


class OriginCheckMiddleware(ASGIMiddleware):
    """Refuse a state-changing request that a browser says comes from another site (its Origin
    header names another host than the one it was sent to), before any handler runs. The ingest API
    is called by stores' servers with a token, not by browsers with a session."""

    def __init__(self, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()) -> None:
        self.trusted = trusted

    @staticmethod
    def should_bypass_for_scope(scope: Scope) -> bool:
        return scope.get("method") not in UNSAFE_METHODS or scope["path"].startswith(MACHINE_APIS)

    def _hosts(self, scope: Scope, headers: dict[bytes, bytes]) -> set[str]:
        """The host the request was sent to; behind a trusted proxy that rewrites Host, also the
        X-Forwarded-Host it passes on."""
        hosts = {headers.get(b"host", b"").decode("latin-1").lower()}
        client = scope.get("client")
        if self.trusted and client and b"x-forwarded-host" in headers:
            try:
                peer = ipaddress.ip_address(client[0])
            except ValueError:
                peer = None
            if peer is not None and any(peer in network for network in self.trusted):
                forwarded = headers[b"x-forwarded-host"].decode("latin-1").lower()
                hosts.add(forwarded.split(",")[-1].strip())
        return hosts - {""}

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if origin is not None:
            _, _, netloc = origin.decode("latin-1").lower().partition("://")
            if netloc.rstrip("/") not in self._hosts(scope, headers):
                raise PermissionDeniedException(
                    "This request came from another site (its Origin is not this console), so it was "
                    "refused. Use the console's own pages."
                )
        await next_app(scope, receive, send)
