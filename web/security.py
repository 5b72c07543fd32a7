"""Login throttling (Redis) and role checks (guards)."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from redis.asyncio import Redis

from models import Role, User

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class LoginThrottle:
    """Counts failed logins per username and per client address; locks both out for a while."""

    def __init__(self, redis: Redis, max_failures: int, lockout_seconds: int, namespace: str = "") -> None:
        self.redis = redis
        self.namespace = namespace
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds

    def _keys(self, username: str, ip: str) -> list[str]:
        prefix = f"{self.namespace}:login:fail"
        return [f"{prefix}:user:{username.lower()}", f"{prefix}:ip:{ip}"]

    async def locked_for(self, username: str, ip: str) -> int:
        """Seconds left in a lockout, or 0 when logins are allowed."""
        keys = self._keys(username, ip)
        counts = await self.redis.mget(keys)
        for key, count in zip(keys, counts, strict=True):
            # The per-address limit is looser so a shared office IP is not locked by one typo-prone user.
            limit = self.max_failures * (4 if ":ip:" in key else 1)
            if count is not None and int(count) >= limit:
                return max(int(await self.redis.ttl(key)), 1)
        return 0

    async def failed(self, username: str, ip: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in self._keys(username, ip):
                pipe.incr(key)
                pipe.expire(key, self.lockout_seconds)
            await pipe.execute()

    async def succeeded(self, username: str, ip: str) -> None:
        await self.redis.delete(self._keys(username, ip)[0])


def current_user(connection: ASGIConnection[Any, Any, Any, Any]) -> User | None:
    """The logged-in user set by the auth middleware, if any."""
    user = connection.scope.get("user")
    return user if isinstance(user, User) else None


async def role_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Every route needs a login unless marked public; writes need operator unless a route says more.

    The check lives on the server for every handler, so a crafted request cannot skip it. It is a
    coroutine because Litestar runs a plain-function guard in a thread, on every request.
    """
    if handler.opt.get("public"):
        return
    user = current_user(connection)
    if user is None:
        raise NotAuthorizedException("Please log in.")
    needed = handler.opt.get("role")
    if needed is None:
        needed = Role.VIEWER if connection.scope.get("method", "GET") in SAFE_METHODS else Role.OPERATOR
    if not Role(user.role).allows(Role(needed)):
        raise PermissionDeniedException(f"This needs the {Role(needed).value} role; you are {user.role}.")
