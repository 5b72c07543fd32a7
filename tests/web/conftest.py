"""Web app fixtures: the real app on a real PostgreSQL database and Redis, driven over ASGI."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from config.settings import Settings
from models import Role
from models.db import make_engine, make_sessionmaker
from tests.support.web import login, make_user
from web.app import create_app


@pytest.fixture(scope="session")
def app(settings: Settings) -> Litestar:
    return create_app(settings)


@pytest.fixture(scope="session")
async def sessionmaker(settings: Settings) -> AsyncIterator[Any]:
    engine = make_engine(settings.database_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app) as test_client:
        yield test_client


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def as_role(client: AsyncTestClient[Litestar], sessionmaker: Any) -> Any:
    """Log the client in as a new user of the given role; returns the user."""

    async def _as(role: Role) -> Any:
        user = await make_user(sessionmaker, unique(role.value), role)
        response = await login(client, user.username)
        assert response.status_code == 302, response.text
        return user

    return _as
