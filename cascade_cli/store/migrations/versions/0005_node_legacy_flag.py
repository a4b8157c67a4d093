"""nodes.legacy: a we-mp-rss child running the original code (docs/migration.md)

Off for every existing node: only ``cascade nodes legacy NAME on`` or
``cascade import we-mp-rss`` turn it on, so new children keep least privilege.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 20:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('nodes') as batch:
        batch.add_column(sa.Column('legacy', sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('nodes') as batch:
        batch.drop_column('legacy')
