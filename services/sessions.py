"""Login sessions on the server: start one at login, find it for each request, end one (logout) or
all of a user's (an admin, a deactivation, a password change)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import User, UserSession
from models.base import aware, utcnow

IDLE_TIMEOUT = timedelta(hours=12)
LIFETIME = timedelta(days=14)  # however active, a session ends this long after login
TOUCH_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often per session


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start(db: AsyncSession, user: User, ip: str | None, user_agent: str | None) -> str:
    """A new session for the user; returns the id the cookie carries (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    # Sessions of this user that ran out are of no use to anyone: drop them as a new one starts.
    await db.exec(
        delete(UserSession).where(
            col(UserSession.user_id) == user.id,
            or_(
                col(UserSession.last_seen_at) < now - IDLE_TIMEOUT,
                col(UserSession.created_at) < now - LIFETIME,
            ),
        )
    )
    db.add(
        UserSession(
            token_hash=_hash(token),
            user_id=user.id or 0,
            created_at=now,
            last_seen_at=now,
            ip=ip,
            user_agent=(user_agent or "")[:200] or None,
        )
    )
    await db.flush()
    return token


async def find(db: AsyncSession, token: str) -> tuple[UserSession, User] | None:
    """The live session with this id and its user; None when it was ended, ran out or never was.
    A session past its idle time or lifetime is deleted on the way."""
    found = (
        await db.exec(
            select(UserSession, User)
            .join(User, col(User.id) == col(UserSession.user_id))
            .where(col(UserSession.token_hash) == _hash(token))
        )
    ).first()
    if found is None:
        return None
    session, user = found
    now = utcnow()
    last_seen, created = aware(session.last_seen_at), aware(session.created_at)
    assert last_seen is not None and created is not None
    if now - last_seen > IDLE_TIMEOUT or now - created > LIFETIME:
        await db.exec(delete(UserSession).where(col(UserSession.id) == session.id))
        await db.commit()
        return None
    if now - last_seen > TOUCH_EVERY:
        await db.exec(update(UserSession).where(col(UserSession.id) == session.id).values(last_seen_at=now))
        await db.commit()
    return session, user


async def end(db: AsyncSession, token: str) -> None:
    """End this session (logout): the cookie stops working everywhere it was copied."""
    await db.exec(delete(UserSession).where(col(UserSession.token_hash) == _hash(token)))


async def end_all(db: AsyncSession, user_id: int) -> int:
    """End every session of the user; returns how many there were."""
    result = await db.exec(delete(UserSession).where(col(UserSession.user_id) == user_id))
    return int(result.rowcount or 0)


async def counts(db: AsyncSession, since: datetime | None = None) -> dict[int, int]:
    """Live sessions per user id (not idle past the timeout)."""
    since = since or utcnow() - IDLE_TIMEOUT
    rows = await db.exec(
        select(UserSession.user_id, func.count())
        .where(col(UserSession.last_seen_at) >= since)
        .group_by(col(UserSession.user_id))
    )
    return {user_id: int(n) for user_id, n in rows.all()}
