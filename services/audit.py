"""Writing and reading the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Request
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models import AuditEvent, User


def record(
    db: AsyncSession,
    request: Request[Any, Any, Any] | None,
    action: str,
    target: str | None = None,
    user: User | None = None,
    **detail: Any,
) -> AuditEvent:
    """Add an audit row to the caller's transaction, so the action and its record commit together."""
    actor = user or (request.scope.get("user") if request is not None else None)
    event = AuditEvent(
        user_id=actor.id if isinstance(actor, User) else None,
        username=actor.username if isinstance(actor, User) else detail.pop("username", None),
        action=action,
        target=target,
        detail=detail,
        ip=request.client.host if request is not None and request.client else None,
    )
    db.add(event)
    return event


async def list_events(
    db: AsyncSession,
    *,
    action: str | None = None,
    username: str | None = None,
    before_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
) -> list[AuditEvent]:
    """Newest first, keyset-paginated by id."""
    query = select(AuditEvent).order_by(col(AuditEvent.id).desc()).limit(limit)
    if action:
        query = query.where(col(AuditEvent.action).startswith(action))
    if username:
        query = query.where(AuditEvent.username == username)
    if before_id:
        query = query.where(col(AuditEvent.id) < before_id)
    if since:
        query = query.where(col(AuditEvent.at) >= since)
    if until:
        query = query.where(col(AuditEvent.at) < until)
    return list((await db.exec(query)).all())


async def distinct_actions(db: AsyncSession) -> list[str]:
    result = await db.exec(select(AuditEvent.action).distinct().order_by(AuditEvent.action))
    return list(result.all())
