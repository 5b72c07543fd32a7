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


def test_sources_over_an_ecommerce_spec_preset_become_that_events_route(tmp_path):
    """Such a source took every record through its preset, whatever the event: after 0014 the
    preset routes its own event only, and other mappings stay the source's mapping."""
    import sqlalchemy as sa

    url = f"sqlite+aiosqlite:///{tmp_path / 'routes.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0011_list_members")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'routes.db'}")
    with engine.begin() as conn:
        for mapping_id, name in ((1, "Ecommerce spec: Product Added -> Added to Cart"), (2, "Store orders")):
            conn.execute(
                sa.text(
                    "INSERT INTO mappings (id, name, target_kind, current_version, deleted, created_at,"
                    " updated_at) VALUES (:id, :name, 'event', 1, 0, '2026-12-01', '2026-12-01')"
                ),
                {"id": mapping_id, "name": name},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO ingest_sources (id, name, mapping_id, sent_count, failed_count,"
                    " duplicate_count, created_at, updated_at)"
                    " VALUES (:id, :name, :id, 0, 0, 0, '2026-12-01', '2026-12-01')"
                ),
                {"id": mapping_id, "name": f"source {mapping_id}"},
            )
        # Records already received: their source's table is rebuilt under them.
        conn.execute(
            sa.text(
                "INSERT INTO ingest_inbox (source_id, dedup_key, body, status, attempts, received_at) VALUES"
                " (1, 'k1', '{}', 'sent', 1, '2026-12-01'), (2, 'k2', '{}', 'pending', 0, '2026-12-01')"
            )
        )
    command.upgrade(config, "head")
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ingest_inbox")).scalar() == 2
        sources = conn.execute(sa.text("SELECT id, mapping_id FROM ingest_sources ORDER BY id")).all()
        routes = conn.execute(
            sa.text("SELECT source_id, event_name, event_key, mapping_id FROM ingest_routes")
        ).all()
    assert sources == [(1, None), (2, 2)]
    assert routes == [(1, "Product Added", "product added", 1)]
    command.downgrade(config, "0011_list_members")
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT id, mapping_id FROM ingest_sources ORDER BY id")).all() == [
            (1, 1),
            (2, 2),
        ]
    engine.dispose()
