"""Create an admin from the command line (an alternative to the first-run page)."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys

from pydantic import ValidationError

from config.settings import get_settings
from models import Role
from models.db import make_engine, make_sessionmaker, session_scope
from models.user import UserCreate
from services import users


async def _create(username: str, password: str) -> None:
    engine = make_engine(get_settings().database_url)
    try:
        async with session_scope(make_sessionmaker(engine)) as db:
            await users.create_user(db, UserCreate(username=username, password=password, role=Role.ADMIN))
    finally:
        await engine.dispose()


def create_admin(username: str) -> int:
    """Password from ADMIN_PASSWORD, or asked for on the terminal."""
    password = os.environ.get("ADMIN_PASSWORD") or getpass.getpass(f"Password for {username}: ")
    try:
        asyncio.run(_create(username, password))
    except (ValidationError, users.UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"admin {username!r} created")
    return 0
