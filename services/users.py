"""Operators: create, authenticate, change role."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import Role, User
from models.base import utcnow
from models.user import UserCreate
from services import sessions

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """argon2id hash for storage."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when the password matches; never raises for a wrong one."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# Verifying against a real hash when the user is unknown keeps response times alike,
# so the login form does not reveal which usernames exist.
_DUMMY_HASH = hash_password("not-a-real-password-ever")


class UserError(ValueError):
    """A user change that cannot be made, with a message for the operator."""


async def count_users(db: AsyncSession) -> int:
    return int((await db.exec(select(func.count()).select_from(User))).one())


async def get_by_username(db: AsyncSession, username: str) -> User | None:
    return (await db.exec(select(User).where(User.username == username.strip().lower()))).first()


async def create_user(db: AsyncSession, data: UserCreate) -> User:
    """Create a user; usernames are case-insensitive."""
    username = data.username.strip().lower()
    if await get_by_username(db, username):
        raise UserError(f"A user named {username!r} already exists.")
    user = User(username=username, role=data.role, password_hash=hash_password(data.password))
    db.add(user)
    await db.flush()
    return user


async def authenticate(db: AsyncSession, username: str, password: str) -> User | None:
    """The active user with this password, or None."""
    user = await get_by_username(db, username)
    if user is None or not user.is_active:
        verify_password(_DUMMY_HASH, password)
        return None
    if not verify_password(user.password_hash, password):
        return None
    user.last_login_at = utcnow()
    db.add(user)
    return user


async def list_users(db: AsyncSession) -> list[User]:
    return list((await db.exec(select(User).order_by(User.username))).all())


async def _active_admins(db: AsyncSession) -> int:
    query = select(func.count()).select_from(User).where(User.role == Role.ADMIN, User.is_active == True)  # noqa: E712
    return int((await db.exec(query)).one())


async def update_user(db: AsyncSession, user: User, *, role: Role | None, is_active: bool | None) -> User:
    """Change role or active flag, refusing to leave the console without an active admin."""
    losing_admin = (
        user.role == Role.ADMIN
        and user.is_active
        and ((role is not None and role != Role.ADMIN) or is_active is False)
    )
    if losing_admin and await _active_admins(db) <= 1:
        raise UserError("This is the last active admin; make someone else admin first.")
    if role is not None:
        user.role = role
    if is_active is not None:
        user.is_active = is_active
        if not is_active:
            await sessions.end_all(db, user.id or 0)
    db.add(user)
    return user
