"""Readiness checks: database reachable and migrated, Redis reachable."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

ROOT = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def migration_head() -> str | None:
    """The newest Alembic revision shipped with this code."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    return ScriptDirectory.from_config(config).get_current_head()


async def check_database(engine: AsyncEngine) -> tuple[bool, str]:
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    except Exception as exc:  # any driver error means "not ready"; the message says which
        return False, f"database: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    head = migration_head()
    if version != head:
        return False, f"database: migrations at {version}, code expects {head}; run `make migrate`"
    return True, "database: ok"


async def check_redis(redis: Redis) -> tuple[bool, str]:
    try:
        await redis.ping()
    except Exception as exc:
        return False, f"redis: {type(exc).__name__}: {exc}"
    return True, "redis: ok"
