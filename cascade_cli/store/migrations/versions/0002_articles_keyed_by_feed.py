"""articles keyed by (feed_id, id)

An index keyed by the identity hash alone puts each of an upload's articles on a page of its
own; led by the feed, an upload's articles share a page or two (see models.Article).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 14:40:00
"""
from __future__ import annotations

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def _primary_key(columns: list[str]) -> None:
    # SQLite rebuilds the table (batch mode); the others change the key in place.
    with op.batch_alter_table('articles', schema=None) as batch_op:
        batch_op.drop_constraint('pk_articles', type_='primary')
        batch_op.create_primary_key('pk_articles', columns)


def upgrade() -> None:
    _primary_key(['feed_id', 'id'])


def downgrade() -> None:
    _primary_key(['id'])
