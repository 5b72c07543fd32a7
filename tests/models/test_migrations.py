"""Every model change has its Alembic revision, on both backends."""

from __future__ import annotations

import asyncio

from alembic import command

from cli.migrate import alembic_config


def test_models_and_migrations_agree(db_url):
    # `alembic check` fails when autogenerate would find something the migrations lack.
    command.check(alembic_config(db_url))


def test_downgrade_to_base_and_back(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'roundtrip.db'}"
    config = alembic_config(url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    asyncio.run(asyncio.sleep(0))
