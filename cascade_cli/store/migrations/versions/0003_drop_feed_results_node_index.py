"""drop the unused index on feed_results.node_id

No query looks feed results up by node; every completion wrote the index.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 15:20:00
"""
from __future__ import annotations

from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('feed_results', schema=None) as batch_op:
        batch_op.drop_index('ix_feed_results_node_id')


def downgrade() -> None:
    with op.batch_alter_table('feed_results', schema=None) as batch_op:
        batch_op.create_index('ix_feed_results_node_id', ['node_id'], unique=False)
