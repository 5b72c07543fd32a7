"""Users page: admins add operators, change roles, deactivate accounts."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Template
from pydantic import ValidationError

from models import Role, User
from models.user import UserCreate
from services import audit, sessions, users
from web.controllers.auth import _first_error
from web.deps import Db
from web.templating import render

ADMIN = {"role": Role.ADMIN}


class UsersController(Controller):
    path = "/users"
    include_in_schema = False

    @get("/", opt=ADMIN)
    async def index(self, request: Request[Any, Any, Any], db: Db) -> Template:
        return render(
            request,
            "users/index.html",
            users=await users.list_users(db),
            roles=list(Role),
            live=await sessions.counts(db),
        )

    @post("/{user_id:int}/sessions/end", opt=ADMIN)
    async def end_sessions(self, request: Request[Any, Any, Any], db: Db, user_id: FromPath[int]) -> Template:
        """End every session of the user: each browser (or copied cookie) must log in again."""
        user = await db.get(User, user_id)
        if user is None:
            raise NotFoundException()
        ended = await sessions.end_all(db, user_id)
        audit.record(db, request, "user.sessions_end", target=user.username, ended=ended)
        return await _table(
            request, db, notice=f"Ended {ended} session{'s' * (ended != 1)} of {user.username}."
        )

    @post("/", opt=ADMIN)
    async def create(self, request: Request[Any, Any, Any], db: Db) -> Template:
        form = await request.form()
        error = None
        try:
            data = UserCreate(
                username=str(form.get("username", "")),
                password=str(form.get("password", "")),
                role=_role(str(form.get("role", "viewer"))),
            )
            user = await users.create_user(db, data)
            audit.record(db, request, "user.create", target=user.username, role=user.role.value)
        except ValidationError as exc:
            error = _first_error(exc)
        except (users.UserError, ValueError) as exc:
            error = str(exc)
        return await _table(request, db, error=error)

    @post("/{user_id:int}", opt=ADMIN)
    async def update(self, request: Request[Any, Any, Any], db: Db, user_id: FromPath[int]) -> Template:
        user = await db.get(User, user_id)
        if user is None:
            raise NotFoundException()
        form = await request.form()
        try:
            role = _role(str(form["role"])) if form.get("role") else None
        except users.UserError as exc:
            return await _table(request, db, error=str(exc))
        active = {"true": True, "false": False}.get(str(form.get("is_active", "")))
        error = None
        try:
            await users.update_user(db, user, role=role, is_active=active)
            audit.record(
                db,
                request,
                "user.update",
                target=user.username,
                role=user.role.value,
                is_active=user.is_active,
            )
        except users.UserError as exc:
            error = str(exc)
        return await _table(request, db, error=error)


async def _table(
    request: Request[Any, Any, Any], db: Db, error: str | None = None, notice: str | None = None
) -> Template:
    return render(
        request,
        "users/_table.html",
        200 if error is None else 400,
        users=await users.list_users(db),
        roles=list(Role),
        live=await sessions.counts(db),
        error=error,
        notice=notice,
    )


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise users.UserError(f"{value[:40]!r} is not a role; choose one of {allowed}.") from None
