"""The DB layer against both backends: PostgreSQL and the embedded SQLite default."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from models import Account, AuditEvent, ConnectionStatus, Role, User
from models.db import make_engine, make_sessionmaker


@pytest.fixture
async def db(db_url):
    engine = make_engine(db_url)
    async with make_sessionmaker(engine)() as session:
        yield session
    await engine.dispose()


async def test_user_roundtrip_keeps_enum_and_timestamps(db):
    name = f"u{uuid.uuid4().hex[:8]}"
    db.add(User(username=name, role=Role.OPERATOR, password_hash="x"))
    await db.commit()
    user = (await db.exec(select(User).where(User.username == name))).one()
    assert user.role is Role.OPERATOR
    assert user.created_at is not None


async def test_username_is_unique(db):
    name = f"u{uuid.uuid4().hex[:8]}"
    db.add(User(username=name, password_hash="x"))
    await db.commit()
    db.add(User(username=name, password_hash="y"))
    with pytest.raises(IntegrityError):
        await db.commit()
    await db.rollback()


async def test_audit_detail_is_json(db):
    db.add(AuditEvent(action="test.json", detail={"nested": {"n": 1}, "list": [1, "ü"]}))
    await db.commit()
    event = (await db.exec(select(AuditEvent).where(AuditEvent.action == "test.json"))).first()
    assert event.detail == {"nested": {"n": 1}, "list": [1, "ü"]}


async def test_account_status_enum_stored_by_value(db):
    account = Account(label="t", status=ConnectionStatus.FAILED, status_message="bad key")
    db.add(account)
    await db.commit()
    again = await db.get(Account, account.id)
    assert again.status is ConnectionStatus.FAILED
    # The session database is shared: leave no second account for the console to pick up.
    await db.delete(again)
    await db.commit()
