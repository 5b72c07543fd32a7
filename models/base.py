"""Shared column helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field


def utcnow() -> datetime:
    """Timezone-aware now in UTC."""
    return datetime.now(UTC)


def timestamp_field(*, index: bool = False, nullable: bool = False, **kwargs: Any) -> Any:
    """A timezone-aware timestamp column (SQLite stores it as text, PostgreSQL as timestamptz)."""
    default = kwargs.pop("default_factory", None if nullable else utcnow)
    return Field(
        default_factory=default,
        sa_column=sa.Column(sa.DateTime(timezone=True), nullable=nullable, index=index),
        **kwargs,
    )


def json_field(default_factory: Any = dict) -> Any:
    """A JSON column (JSONB on PostgreSQL, JSON text on SQLite)."""
    return Field(
        default_factory=default_factory,
        sa_column=sa.Column(sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    )


def enum_field(enum_cls: type[Any], default: Any, *, index: bool = False) -> Any:
    """Store an enum by value as plain VARCHAR: portable and easy to extend in migrations."""
    return Field(
        default=default,
        sa_column=sa.Column(
            sa.Enum(enum_cls, native_enum=False, values_callable=lambda e: [m.value for m in e], length=32),
            nullable=False,
            index=index,
        ),
    )


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without a zone; they are stored in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
