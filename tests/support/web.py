"""Helpers for driving the web app over HTTP in tests."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from models import Role, User
from models.user import UserCreate
from services import users


async def make_user(
    factory: async_sessionmaker[AsyncSession],
    username: str,
    role: Role,
    password: str = "correct horse battery",
) -> User:
    async with factory() as db:
        user = await users.create_user(db, UserCreate(username=username, password=password, role=role))
        await db.commit()
        return user


def csrf(client: Any) -> str:
    token = client.cookies.get("kc_csrf")
    assert token, "GET a page first so the CSRF cookie is set"
    return str(token)


async def login(client: Any, username: str, password: str = "correct horse battery") -> httpx.Response:
    await client.get("/login")
    answer: httpx.Response = await client.post(
        "/login",
        data={"username": username, "password": password, "_csrf_token": csrf(client)},
        follow_redirects=False,
    )
    return answer


async def post_form(
    client: Any, url: str, data: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    """POST a form with the CSRF token, as the browser does."""
    form = {**(data or {}), "_csrf_token": csrf(client)}
    answer: httpx.Response = await client.post(url, data=form, **kwargs)
    return answer
