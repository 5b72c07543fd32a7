"""Create and drop throwaway PostgreSQL databases for a test session."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator

import asyncpg
from sqlalchemy.engine import make_url


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _execute(admin_url: str, sql: str) -> None:
    conn = await asyncpg.connect(_dsn(admin_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_postgres_database(admin_url: str, name: str) -> str:
    """CREATE DATABASE name on the server of admin_url; returns the new database's URL."""
    asyncio.run(_execute(admin_url, f'CREATE DATABASE "{name}"'))
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    asyncio.run(_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def acreate_postgres_database(admin_url: str, name: str) -> str:
    """Async twin of create_postgres_database, for use inside async tests."""
    await _execute(admin_url, f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def adrop_postgres_database(admin_url: str, url: str) -> None:
    await _execute(admin_url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


@contextlib.contextmanager
def migrated_postgres() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database on the test server, dropped on exit."""
    # Imported here: bench/ uses this module too, and must not get the test environment.
    from cli.migrate import migrate
    from tests.support.env import TEST_DATABASE_URL

    url = create_postgres_database(TEST_DATABASE_URL, f"kc_test_{uuid.uuid4().hex[:10]}")
    assert migrate(url) == 0
    try:
        yield url
    finally:
        drop_postgres_database(TEST_DATABASE_URL, url)
