"""Apply Alembic migrations to DATABASE_URL (what compose's one-shot `migrate` service runs)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text

from config.settings import get_settings
from models.db import make_engine

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["url"] = url
    return config


async def _reachable(url: str) -> str | None:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return None
    except Exception as exc:
        return str(exc).splitlines()[0]
    finally:
        await engine.dispose()


def migrate(url: str | None = None) -> int:
    """Upgrade the database to the newest revision; a clear message when it cannot be reached."""
    url = url or get_settings().database_url
    problem = asyncio.run(_reachable(url))
    if problem:
        where = url.split("@")[-1]
        print(
            f"error: cannot reach the database at {where}: {problem}\n"
            "Check DATABASE_URL and that the database server is running.",
            file=sys.stderr,
        )
        return 2
    command.upgrade(alembic_config(url), "head")
    print("migrations: database is at the newest revision")
    return 0
