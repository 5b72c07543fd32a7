"""0013_catalog_scope: an existing install's placeholder-scoped catalog state moves to its account id."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from cli.migrate import alembic_config


def test_placeholder_state_moves_to_the_learned_account(tmp_path):
    path = tmp_path / "scope.db"
    config = alembic_config(f"sqlite+aiosqlite:///{path}")
    command.upgrade(config, "0011_list_members")
    engine = sa.create_engine(f"sqlite:///{path}")
    state = (
        "INSERT INTO catalog_state (account, catalog, entry_type, external_id, content_hash, klaviyo_id,"
        " last_action, updated_at) VALUES (:a, '$custom:::$default', 'item', :x, :h, :x, 'created',"
        " '2026-12-01 00:00:00')"
    )
    with engine.begin() as db:
        for account_id, klaviyo_id in ((1, "ABC123"), (2, None)):
            db.execute(
                sa.text(
                    "INSERT INTO accounts (id, label, sandbox, klaviyo_account_id, status, created_at,"
                    " updated_at) VALUES (:i, 'Klaviyo', 0, :k, 'ok', :t, :t)"
                ),
                {"i": account_id, "k": klaviyo_id, "t": "2026-12-01 00:00:00"},
            )
        rows = [("account-1", "mug", "old"), ("account-1", "cup", "old"), ("ABC123", "cup", "new"),
                ("account-2", "pot", "old")]  # fmt: skip
        for scope, external_id, digest in rows:
            db.execute(sa.text(state), {"a": scope, "x": external_id, "h": digest})
    command.upgrade(config, "head")
    with engine.begin() as db:
        found = db.execute(sa.text("SELECT account, external_id, content_hash FROM catalog_state")).all()
    engine.dispose()
    # Account 1's placeholder entries move to its id (its newer "cup" stays); account 2 has no id yet.
    assert sorted(found) == [("ABC123", "cup", "new"), ("ABC123", "mug", "old"), ("account-2", "pot", "old")]
