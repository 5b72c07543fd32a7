"""Helpers for driving the web app over HTTP in tests."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from models import Role, User
from models.user import UserCreate
from services import users
from services.mapping_editor import rows_from_spec
from sync.mapping import Mapping as Spec


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


def mapping_form_items(spec: Spec) -> list[tuple[str, str]]:
    """The fields the studio page posts for ``spec`` (what the templates render)."""
    items = [
        ("kind", spec.target.kind.value),
        ("name", spec.name),
        ("base_options", spec.options.model_dump_json()),
    ]
    if spec.target.metric:
        items.append(("metric", spec.target.metric))
    for index, row in enumerate(rows_from_spec(spec)):
        key = f"x{index}"
        items.append(("rule", key))
        for name in (
            "source_kind",
            "source",
            "target",
            "op",
            "decimal",
            "separator",
            "date_format",
            "timezone",
        ):
            items.append((f"f-{key}-{name}", str(getattr(row, name))))
        items += [(f"f-{key}-date_only_hour", row.date_only_hour), (f"f-{key}-dayfirst", row.dayfirst)]
        items += [(f"f-{key}-region", row.region), (f"f-{key}-default", row.default)]
        if row.more:
            items.append((f"f-{key}-more", row.more))
        if row.source_json:
            items.append((f"f-{key}-source_json", "1"))
        if row.default_json:
            items.append((f"f-{key}-default_json", "1"))
        items.append((f"f-{key}-required", "0"))
        if row.required:
            items.append((f"f-{key}-required", "1"))
        items.append((f"f-{key}-skip", "0"))
        if row.skip:
            items.append((f"f-{key}-skip", "1"))
    return items


def repeated_fields(items: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Form items as httpx wants repeated fields: name -> values in order."""
    out: dict[str, list[str]] = {}
    for key, value in items:
        out.setdefault(key, []).append(value)
    return out
