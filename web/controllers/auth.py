"""Login, logout and the first-run page that creates the first admin."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromQuery
from litestar.response import Redirect, Template
from pydantic import ValidationError
from redis.exceptions import RedisError

from models import Role, User
from models.user import UserCreate
from services import audit, sessions, users
from web.deps import Db, RedisDep, SettingsDep
from web.security import LoginThrottle
from web.templating import render

PUBLIC = {"public": True}


def _safe_next(target: str | None) -> str:
    # Only same-site paths: an open redirect after login is a phishing aid.
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return "/"


async def _start_session(request: Request[Any, Any, Any], db: Db, user: User) -> None:
    ip = request.client.host if request.client else None
    sid = await sessions.start(db, user, ip, request.headers.get("user-agent"))
    request.set_session({"sid": sid, "pwv": user.password_hash[-12:], "seen": time.time()})


class AuthController(Controller):
    include_in_schema = False

    @get("/login", opt=PUBLIC)
    async def login_page(
        self, request: Request[Any, Any, Any], db: Db, next: FromQuery[str | None] = None
    ) -> Any:
        if await users.count_users(db) == 0:
            return Redirect("/setup")
        expired = bool(request.session.get("expired")) if request.session else False
        message = "Your session expired; please log in again." if expired else None
        return render(request, "auth/login.html", next=_safe_next(next), notice=message)

    @post("/login", opt=PUBLIC)
    async def login(
        self, request: Request[Any, Any, Any], db: Db, redis: RedisDep, settings: SettingsDep
    ) -> Redirect | Template:
        form = await request.form()
        username, password = str(form.get("username", "")).strip().lower(), str(form.get("password", ""))
        next_url = _safe_next(str(form.get("next", "/")))
        ip = request.client.host if request.client else "unknown"
        throttle = LoginThrottle(
            redis, settings.login_max_failures, settings.login_lockout_seconds, namespace=settings.queue_name
        )
        try:
            wait = await throttle.locked_for(username, ip)
        except RedisError:
            wait = 0  # Throttling is a safeguard; an outage of Redis must not lock everyone out.
        if wait:
            minutes = max(1, round(wait / 60))
            error = f"Too many failed attempts. Try again in about {minutes} minute{'s' * (minutes > 1)}."
            return render(request, "auth/login.html", 429, next=next_url, error=error, username=username)
        user = await users.authenticate(db, username, password)
        if user is None:
            with contextlib.suppress(RedisError):
                await throttle.failed(username, ip)
            audit.record(db, request, "login.failed", target=username, username=username)
            error = "Wrong username or password."
            return render(request, "auth/login.html", 401, next=next_url, error=error, username=username)
        with contextlib.suppress(RedisError):
            await throttle.succeeded(username, ip)
        audit.record(db, request, "login", target=user.username, user=user)
        await _start_session(request, db, user)
        return Redirect(next_url)

    @post("/logout", opt={"role": Role.VIEWER})
    async def logout(self, request: Request[Any, Any, Any], db: Db) -> Redirect:
        audit.record(db, request, "logout")
        sid = request.session.get("sid") if request.session else None
        if sid:
            await sessions.end(db, str(sid))
        request.clear_session()
        return Redirect("/login")

    @get("/setup", opt=PUBLIC)
    async def setup_page(self, request: Request[Any, Any, Any], db: Db) -> Any:
        if await users.count_users(db) > 0:
            return Redirect("/login")
        return render(request, "auth/setup.html")

    @post("/setup", opt=PUBLIC)
    async def setup(self, request: Request[Any, Any, Any], db: Db) -> Any:
        if await users.count_users(db) > 0:
            return Redirect("/login")
        form = await request.form()
        username, password = str(form.get("username", "")), str(form.get("password", ""))
        if password != str(form.get("password_confirm", "")):
            return render(
                request, "auth/setup.html", 400, error="The passwords do not match.", username=username
            )
        try:
            data = UserCreate(username=username, password=password, role=Role.ADMIN)
        except ValidationError as exc:
            return render(request, "auth/setup.html", 400, error=_first_error(exc), username=username)
        user = await users.create_user(db, data)
        audit.record(
            db, request, "user.create", target=user.username, user=user, role="admin", first_run=True
        )
        await _start_session(request, db, user)
        return Redirect("/")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else "value"
    return f"{field.capitalize()}: {err['msg']}."
