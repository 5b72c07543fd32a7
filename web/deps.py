"""Dependencies handlers ask for by name: db, settings, redis, arq."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias

from arq.connections import ArqRedis
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from redis.asyncio import Redis
from sqlmodel.ext.asyncio.session import AsyncSession

from config.settings import Settings


async def provide_db(state: State) -> AsyncIterator[AsyncSession]:
    """One session per request: committed when the handler returns, rolled back when it raises."""
    async with state.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


def provide_redis(state: State) -> Redis:
    redis: Redis = state.redis
    return redis


def provide_arq(state: State) -> ArqRedis:
    arq: ArqRedis = state.arq
    return arq


DEPENDENCIES: dict[str, Any] = {
    "db": Provide(provide_db),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "redis": Provide(provide_redis, sync_to_thread=False),
    "arq": Provide(provide_arq, sync_to_thread=False),
}

# Handlers declare dependencies explicitly by name (Litestar 3 drops inferred ones).
Db: TypeAlias = NamedDependency[AsyncSession]
SettingsDep: TypeAlias = NamedDependency[Settings]
RedisDep: TypeAlias = NamedDependency[Redis]
ArqDep: TypeAlias = NamedDependency[ArqRedis]
