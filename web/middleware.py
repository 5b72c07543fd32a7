"""Loads the logged-in user from the session cookie for every request."""

from __future__ import annotations

import time
from typing import Any

from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from models import User

# A session idle longer than this is treated as expired, whatever the cookie's max-age says.
IDLE_TIMEOUT_SECONDS = 12 * 3600
# The ingest API authenticates with its own bearer tokens, never a session.
PUBLIC_PREFIXES = ("/static/", "/healthz", "/readyz", "/metrics", "/api/ingest/")


class AuthMiddleware(ASGIMiddleware):
    @staticmethod
    def should_bypass_for_scope(scope: Scope) -> bool:
        # Assets and probes need no user; skipping the DB lookup keeps them cheap.
        return scope["path"].startswith(PUBLIC_PREFIXES)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        scope["user"] = None
        session: dict[str, Any] = scope.get("session") or {}  # type: ignore[assignment]
        uid = session.get("uid")
        if uid is not None:
            seen = float(session.get("seen", 0))
            if time.time() - seen > IDLE_TIMEOUT_SECONDS:
                session.clear()
                session["expired"] = True
            else:
                factory = scope["app"].state.sessionmaker
                async with factory() as db:
                    user = await db.get(User, uid)
                if user is not None and user.is_active and session.get("pwv") == user.password_hash[-12:]:
                    scope["user"] = user
                    session["seen"] = time.time()
                else:
                    # Deactivated user or changed password: the old cookie must stop working.
                    session.clear()
        await next_app(scope, receive, send)
