"""Users page (admin only) and the audit log."""

from __future__ import annotations

import re

from sqlmodel import select

from models import Role, User
from tests.support.env import unique
from tests.support.web import make_user, post_form


async def test_admin_adds_an_operator_and_it_is_audited(client, as_role, sessionmaker):
    await as_role(Role.ADMIN)
    name = unique("newop")
    response = await post_form(
        client, "/users/", {"username": name, "password": "long-enough-pw", "role": "operator"}
    )
    assert response.status_code == 200
    assert name in response.text
    async with sessionmaker() as db:
        created = (await db.exec(select(User).where(User.username == name))).one()
    assert created.role == Role.OPERATOR
    audit = await client.get("/audit/?action=user.create")
    assert audit.status_code == 200 and name in audit.text


async def test_duplicate_and_weak_users_get_specific_messages(client, as_role):
    admin = await as_role(Role.ADMIN)
    dup = await post_form(client, "/users/", {"username": admin.username, "password": "long-enough-pw"})
    assert dup.status_code == 400 and "already exists" in dup.text
    weak = await post_form(client, "/users/", {"username": unique("w"), "password": "short"})
    assert weak.status_code == 400 and "Password" in weak.text


async def test_role_change_and_deactivation(client, as_role, sessionmaker):
    await as_role(Role.ADMIN)
    name = unique("v")
    await post_form(client, "/users/", {"username": name, "password": "long-enough-pw", "role": "viewer"})
    async with sessionmaker() as db:
        target = (await db.exec(select(User).where(User.username == name))).one()
    await post_form(client, f"/users/{target.id}", {"role": "operator"})
    await post_form(client, f"/users/{target.id}", {"is_active": "false"})
    async with sessionmaker() as db:
        target = await db.get(User, target.id)
    assert target.role == Role.OPERATOR and target.is_active is False


async def test_users_page_is_admin_only_even_for_reading(client, as_role):
    await as_role(Role.OPERATOR)
    assert (await client.get("/users/", headers={"accept": "text/html"})).status_code == 403


async def test_audit_log_filters_by_action(client, as_role):
    user = await as_role(Role.VIEWER)
    page = await client.get(f"/audit/?action=login&username={user.username}")
    assert page.status_code == 200
    rows = page.text.split('id="audit-rows"', 1)[1]
    actions = re.findall(r"<code>([^<]+)</code>", rows)
    assert actions and set(actions) == {"login"}


async def test_an_invalid_role_is_a_400_naming_the_roles(client, as_role, sessionmaker):
    await as_role(Role.ADMIN)
    target = await make_user(sessionmaker, unique("op"), Role.OPERATOR)
    for url, form in [
        (f"/users/{target.id}", {"role": "superuser"}),
        ("/users/", {"username": unique("new"), "password": "x" * 12, "role": "root"}),
    ]:
        answer = await post_form(client, url, form, headers={"hx-request": "true"})
        assert answer.status_code == 400, url
        assert "is not a role; choose one of admin, operator, viewer." in answer.text
    async with sessionmaker() as db:
        assert (await db.get(User, target.id)).role == Role.OPERATOR
