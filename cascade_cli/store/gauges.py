"""Database state the Prometheus gauges show, read at scrape time (``domain.metrics``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cascade_cli.store.models import ALLOCATION_STATES, Allocation, Node


def allocations_by_status(s: Session) -> dict[str, int]:
    """Every allocation state, with 0 for those no allocation is in."""
    counts = dict.fromkeys(ALLOCATION_STATES, 0)
    for status, n in s.execute(select(Allocation.status, func.count())
                               .group_by(Allocation.status)):
        counts[status] = int(n)
    return counts


def online_nodes(s: Session, since: datetime) -> int:
    """Enabled nodes with a heartbeat at or after ``since``."""
    return int(s.scalar(select(func.count()).select_from(Node).where(
        Node.enabled.is_(True), Node.last_heartbeat_at >= since)) or 0)
