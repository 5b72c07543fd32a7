"""Login, first run, sessions, CSRF, roles and throttling, through real HTTP requests."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from litestar.testing import AsyncTestClient
from sqlmodel import select

from config.settings import Settings
from models import AuditEvent, Role, User, UserSession
from models.db import make_engine, make_sessionmaker
from tests.support.databases import acreate_postgres_database, adrop_postgres_database
from tests.support.env import TEST_DATABASE_URL, unique
from tests.support.web import csrf, login, make_user, post_form
from web.app import create_app


async def test_anonymous_is_sent_to_login(client):
    response = await client.get("/runs", follow_redirects=False)
    assert response.status_code == 302
    assert response.headers["location"] == "/login?next=/runs"


async def test_first_run_creates_the_admin_then_closes(settings: Settings):
    from cli.migrate import migrate

    url = await acreate_postgres_database(TEST_DATABASE_URL, f"kc_first_{uuid.uuid4().hex[:8]}")
    try:
        assert await asyncio.to_thread(migrate, url) == 0
        app = create_app(settings.model_copy(update={"database_url": url}))
        async with AsyncTestClient(app) as client:
            response = await client.get("/login", follow_redirects=False)
            assert response.headers["location"] == "/setup"
            await client.get("/setup")
            mismatch = await post_form(
                client,
                "/setup",
                {"username": "Root", "password": "a-long-password", "password_confirm": "other-password"},
            )
            assert mismatch.status_code == 400 and "do not match" in mismatch.text
            short = await post_form(
                client, "/setup", {"username": "root", "password": "short", "password_confirm": "short"}
            )
            assert short.status_code == 400 and "Password" in short.text
            done = await post_form(
                client,
                "/setup",
                {"username": "Root", "password": "a-long-password", "password_confirm": "a-long-password"},
                follow_redirects=False,
            )
            assert done.status_code == 302 and done.headers["location"] == "/"
            overview = await client.get("/")
            assert overview.status_code == 200 and "root" in overview.text and "Overview" in overview.text
            # Once an admin exists the first-run page is closed for good.
            again = await client.get("/setup", follow_redirects=False)
            assert again.headers["location"] == "/login"
        engine = make_engine(url)
        async with make_sessionmaker(engine)() as db:
            users = (await db.exec(select(User))).all()
            assert [(u.username, u.role) for u in users] == [("root", Role.ADMIN)]
            assert users[0].password_hash.startswith("$argon2id$")
        await engine.dispose()
    finally:
        await adrop_postgres_database(TEST_DATABASE_URL, url)


async def test_wrong_password_is_refused_and_audited(client, sessionmaker):
    user = await make_user(sessionmaker, unique("op"), Role.OPERATOR)
    response = await login(client, user.username, "not the password")
    assert response.status_code == 401
    assert "Wrong username or password." in response.text
    async with sessionmaker() as db:
        events = (await db.exec(select(AuditEvent).where(AuditEvent.target == user.username))).all()
    assert [e.action for e in events] == ["login.failed"]


async def test_login_throttles_after_repeated_failures(client, sessionmaker, settings):
    user = await make_user(sessionmaker, unique("op"), Role.OPERATOR)
    for _ in range(settings.login_max_failures):
        assert (await login(client, user.username, "wrong")).status_code == 401
    locked = await login(client, user.username)  # right password, but locked out now
    assert locked.status_code == 429
    assert "Too many failed attempts" in locked.text


async def test_login_sets_hardened_cookie_and_logout_ends_session(client, sessionmaker):
    user = await make_user(sessionmaker, unique("op"), Role.OPERATOR)
    response = await login(client, user.username)
    assert response.status_code == 302
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert (await client.get("/")).status_code == 200
    assert (await post_form(client, "/logout", follow_redirects=False)).status_code in (302, 303)
    assert (await client.get("/", follow_redirects=False)).status_code == 302


def _cookies(client) -> list:
    """The client's cookies, to be put back later: a copy of the browser's cookie jar."""
    return list(client.cookies.jar)


def _use(client, cookies: list) -> None:
    client.cookies.clear()
    for cookie in cookies:
        client.cookies.set(cookie.name, cookie.value, domain=cookie.domain, path=cookie.path)


async def test_logout_ends_the_session_wherever_the_cookie_was_copied(client, sessionmaker):
    user = await make_user(sessionmaker, unique("op"), Role.OPERATOR)
    assert (await login(client, user.username)).status_code == 302
    copied = _cookies(client)
    assert (await post_form(client, "/logout", follow_redirects=False)).status_code in (302, 303)
    _use(client, copied)  # the copy taken before logout, sent again
    assert (await client.get("/", follow_redirects=False)).status_code == 302
    async with sessionmaker() as db:
        assert (await db.exec(select(UserSession).where(UserSession.user_id == user.id))).all() == []


async def test_an_admin_ends_every_session_of_a_user(client, as_role, sessionmaker):
    user = await make_user(sessionmaker, unique("op"), Role.OPERATOR)
    devices = []
    for _ in range(2):
        client.cookies.clear()
        assert (await login(client, user.username)).status_code == 302
        assert (await client.get("/")).status_code == 200
        devices.append(_cookies(client))
    client.cookies.clear()
    await as_role(Role.ADMIN)
    admin = _cookies(client)
    page = await client.get("/users/")
    assert f'data-testid="sessions-{user.username}">2' in page.text
    ended = await post_form(client, f"/users/{user.id}/sessions/end", headers={"hx-request": "true"})
    assert ended.status_code == 200 and f"Ended 2 sessions of {user.username}." in ended.text
    assert f'data-testid="sessions-{user.username}">0' in ended.text
    for device in devices:
        _use(client, device)
        assert (await client.get("/", follow_redirects=False)).status_code == 302
    _use(client, admin)
    assert (await client.get("/users/")).status_code == 200  # the admin's own session lives on
    async with sessionmaker() as db:
        entry = (await db.exec(select(AuditEvent).where(AuditEvent.action == "user.sessions_end"))).all()[-1]
    assert entry.target == user.username and entry.detail["ended"] == 2


async def test_missing_csrf_token_is_refused_with_a_clear_page(client, as_role):
    await as_role(Role.ADMIN)
    response = await client.post(
        "/users/", data={"username": "x", "password": "y" * 12}, headers={"accept": "text/html"}
    )
    assert response.status_code == 403
    assert "Reload the page and try again" in response.text
    assert "Traceback" not in response.text


async def test_expired_session_asks_to_log_in_again(client, as_role, monkeypatch):
    await as_role(Role.VIEWER)
    monkeypatch.setattr("web.middleware.IDLE_TIMEOUT_SECONDS", -1)
    response = await client.get("/", follow_redirects=False)
    assert response.status_code == 302
    monkeypatch.setattr("web.middleware.IDLE_TIMEOUT_SECONDS", 3600)
    page = await client.get(response.headers["location"])
    assert "Your session expired" in page.text


@pytest.mark.parametrize(
    ("role", "url", "data"),
    [
        (Role.VIEWER, "/users/", {"username": "mallory", "password": "x" * 12, "role": "admin"}),
        (Role.VIEWER, "/connection/key", {"private_key": "pk_" + "a" * 30}),
        (Role.VIEWER, "/connection/test", {}),
        (Role.OPERATOR, "/users/", {"username": "mallory", "password": "x" * 12, "role": "admin"}),
        (Role.OPERATOR, "/connection/key", {"private_key": "pk_" + "a" * 30}),
    ],
)
async def test_writes_beyond_the_role_get_403(client, as_role, sessionmaker, role, url, data):
    await as_role(role)
    response = await post_form(client, url, data, headers={"accept": "text/html"})
    assert response.status_code == 403
    assert "role" in response.text
    async with sessionmaker() as db:
        assert (await db.exec(select(User).where(User.username == "mallory"))).first() is None


async def test_viewer_cannot_promote_itself_by_crafted_request(client, as_role, sessionmaker):
    viewer = await as_role(Role.VIEWER)
    response = await post_form(client, f"/users/{viewer.id}", {"role": "admin"})
    assert response.status_code == 403
    async with sessionmaker() as db:
        assert (await db.get(User, viewer.id)).role == Role.VIEWER


async def test_deactivated_user_is_logged_out_at_once(client, as_role, sessionmaker):
    user = await as_role(Role.OPERATOR)
    async with sessionmaker() as db:
        row = await db.get(User, user.id)
        row.is_active = False
        db.add(row)
        await db.commit()
    assert (await client.get("/", follow_redirects=False)).status_code == 302


async def test_deactivating_a_user_ends_their_sessions(client, as_role, sessionmaker):
    user = await make_user(sessionmaker, unique("op"), Role.OPERATOR)
    assert (await login(client, user.username)).status_code == 302
    theirs = _cookies(client)
    client.cookies.clear()
    await as_role(Role.ADMIN)
    answer = await post_form(client, f"/users/{user.id}", {"is_active": "false"})
    assert answer.status_code == 200
    async with sessionmaker() as db:
        assert (await db.exec(select(UserSession).where(UserSession.user_id == user.id))).all() == []
    _use(client, theirs)
    assert (await client.get("/", follow_redirects=False)).status_code == 302


async def test_htmx_request_without_login_is_redirected_by_header(client):
    response = await client.get("/overview/status", headers={"hx-request": "true"})
    assert response.status_code == 401
    assert response.headers["hx-redirect"] == "/login"


async def test_csrf_cookie_is_set_for_forms(client):
    await client.get("/login")
    assert csrf(client)
