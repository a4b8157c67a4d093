"""schedule_runs: the notifier queues a finished run's notifications (not the run's finish)

A finished run whose ``notified_at`` is empty is one whose notifications the notifier has
still to queue; it finds them with ``ix_run_status_notified`` on every poll. Runs that
finished before this version had theirs queued when they finished: they are marked so, or
the first notifier after the upgrade would queue them again (their deliveries may have been
purged since).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 23:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_INDEX = 'ix_run_status_notified'


def upgrade() -> None:
    op.execute(sa.text(
        "UPDATE schedule_runs SET notified_at = COALESCE(finished_at, created_at) "
        "WHERE status = 'finished' AND notified_at IS NULL"))
    op.create_index(_INDEX, 'schedule_runs', ['status', 'notified_at'])


def downgrade() -> None:
    op.drop_index(_INDEX, table_name='schedule_runs')
