"""Expired leases (the reaper's SQL): find allocations whose lease ran out and put each back
in line or time it out, with a conditional UPDATE on (id, epoch, active status) so several
parent processes reaping one database never double-count."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cascade_cli.store import dialects
from cascade_cli.store.models import ACTIVE_STATES, PENDING, TIMEOUT, Allocation, Node


class ExpiredLease(NamedTuple):
    allocation_id: str
    epoch: int
    attempt: int
    max_attempts: int
    node_id: str | None
    task_id: str
    schedule_run_id: str
    task_name: str | None
    node_name: str | None

    @property
    def exhausted(self) -> bool:
        """No attempt left: it times out instead of going back to pending."""
        return self.attempt >= self.max_attempts


def expired(session: Session, now: datetime, *, limit: int = 500) -> list[ExpiredLease]:
    """Active allocations whose lease ran out, the longest expired first."""
    rows = session.execute(
        select(Allocation.id, Allocation.epoch, Allocation.attempt, Allocation.max_attempts,
               Allocation.node_id, Allocation.task_id, Allocation.schedule_run_id,
               Allocation.task_name, Node.name)
        .outerjoin(Node, Node.id == Allocation.node_id)
        .where(Allocation.status.in_(ACTIVE_STATES), Allocation.lease_expires_at < now)
        .order_by(Allocation.lease_expires_at).limit(limit)).all()
    return [ExpiredLease._make(row) for row in rows]


def expire(session: Session, now: datetime, lease: ExpiredLease) -> bool:
    """Requeue the allocation (attempt counted) or, without attempts left, time it out;
    False when another parent process, or the owner, changed it first. An expired allocation
    leaves its holder's hands without an owner write, so what this process remembered of it
    goes too (``alloc_facts``)."""
    values: dict[str, Any] = {"lease_expires_at": None, "updated_at": now}
    if lease.exhausted:
        values.update(status=TIMEOUT, completed_at=now,
                      error_message=f"lease expired on attempt {lease.attempt} of "
                                    f"{lease.max_attempts}")
    else:
        values.update(status=PENDING, started_at=None)
    result = session.execute(update(Allocation).where(
        Allocation.id == lease.allocation_id, Allocation.epoch == lease.epoch,
        Allocation.status.in_(ACTIVE_STATES)).values(**values)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    dialects.of(session).facts.forget(lease.allocation_id)
    return True
