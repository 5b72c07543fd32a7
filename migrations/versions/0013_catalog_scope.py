"""catalog_state: entries kept under an account's placeholder scope move to its Klaviyo account id

A sync run before any connection test kept its state under ``account-<id>``; the test then switched
the scope to the Klaviyo account id and orphaned that state. Where the id is known, the entries move
to it (an entry the real scope already has keeps its own, newer state). Data only, no schema change.

Revision ID: 0013_catalog_scope
Revises: 0012_row_groups
Create Date: 2026-12-03 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_catalog_scope"
down_revision: str | None = "0012_row_groups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    accounts = bind.execute(
        sa.text("SELECT id, klaviyo_account_id FROM accounts WHERE klaviyo_account_id IS NOT NULL")
    ).all()
    for account_id, klaviyo_id in accounts:
        scope = {"old": f"account-{account_id}", "new": klaviyo_id}
        bind.execute(
            sa.text(
                "DELETE FROM catalog_state WHERE account = :old AND EXISTS ("
                " SELECT 1 FROM catalog_state AS newer WHERE newer.account = :new"
                " AND newer.catalog = catalog_state.catalog AND newer.entry_type = catalog_state.entry_type"
                " AND newer.external_id = catalog_state.external_id)"
            ),
            scope,
        )
        bind.execute(sa.text("UPDATE catalog_state SET account = :new WHERE account = :old"), scope)


def downgrade() -> None:
    # Which entries were under a placeholder is not recorded; they stay with their Klaviyo account.
    pass
