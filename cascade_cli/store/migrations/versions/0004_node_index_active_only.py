"""index only the active allocations of each node (SQLite, PostgreSQL)

``ix_alloc_node_status`` served the capacity check (how many allocations a node holds) but
took an entry for every allocation a node ever had; every status change moved that entry,
so each commit wrote one index page per node involved. As a partial index it holds only
claimed and executing allocations and stays a page or two. MySQL/MariaDB have no partial
indexes: their full index stays as it is.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 16:50:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# As models.ACTIVE_SQL at the time of writing (a migration never imports the models).
_ACTIVE = "status IN ('claimed', 'executing')"
_PARTIAL_DIALECTS = ("sqlite", "postgresql")


def upgrade() -> None:
    if op.get_bind().dialect.name not in _PARTIAL_DIALECTS:
        return
    op.drop_index('ix_alloc_node_status', table_name='allocations')
    op.create_index('ix_alloc_node_status', 'allocations', ['node_id', 'status'], unique=False,
                    sqlite_where=sa.text(_ACTIVE), postgresql_where=sa.text(_ACTIVE))


def downgrade() -> None:
    if op.get_bind().dialect.name not in _PARTIAL_DIALECTS:
        return
    op.drop_index('ix_alloc_node_status', table_name='allocations')
    op.create_index('ix_alloc_node_status', 'allocations', ['node_id', 'status'], unique=False)
