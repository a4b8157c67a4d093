"""Lease expiry: expired leases go back to pending (attempt counted) or to ``timeout``.

A plain function of (session, now, settings); the daemon calls it every
``parent.reaper_interval`` seconds. Each change is a conditional UPDATE on (id, status,
epoch), so several parent processes reaping the same database never double-count.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cascade_cli.config import Settings
from cascade_cli.store.allocations import forget_facts
from cascade_cli.store.engine import after_commit
from cascade_cli.store.events import log_event
from cascade_cli.store.models import ACTIVE_STATES, PENDING, TIMEOUT, Allocation, Node
from cascade_cli.store.nodes import purge_nonces
from cascade_cli.store.runs import allocation_finished, finish_stale_runs

log = logging.getLogger("cascade.reaper")


def reap_expired(session: Session, now: datetime, settings: Settings, *,
                 batch: int = 500) -> dict[str, Any]:
    expired = session.execute(
        select(Allocation.id, Allocation.epoch, Allocation.attempt, Allocation.max_attempts,
               Allocation.node_id, Allocation.task_id, Allocation.schedule_run_id,
               Allocation.task_name, Node.name)
        .outerjoin(Node, Node.id == Allocation.node_id)
        .where(Allocation.status.in_(ACTIVE_STATES), Allocation.lease_expires_at < now)
        .order_by(Allocation.lease_expires_at).limit(batch)).all()
    requeued = timed_out = 0
    lines: list[str] = []
    for (alloc_id, epoch, attempt, max_attempts, node_id, task_id, run_id, task_name,
         node_name) in expired:
        exhausted = attempt >= max_attempts
        values: dict[str, Any] = {"lease_expires_at": None, "updated_at": now}
        if exhausted:
            values.update(status=TIMEOUT, completed_at=now,
                          error_message=f"lease expired on attempt {attempt} of {max_attempts}")
        else:
            values.update(status=PENDING, started_at=None)
        result = session.execute(update(Allocation).where(
            Allocation.id == alloc_id, Allocation.epoch == epoch,
            Allocation.status.in_(ACTIVE_STATES)).values(**values)
            .execution_options(synchronize_session=False))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another parent process, or the owner, got there first
        forget_facts(session, alloc_id)  # out of its holder's hands (see store.alloc_facts)
        if exhausted:
            timed_out += 1
            allocation_finished(session, now, run_id, settings)
        else:
            requeued += 1
        log_event(session, now, "lease_expired", node_id=node_id, status="warning",
                  task_id=task_id, allocation_id=alloc_id,
                  detail={"attempt": attempt, "max_attempts": max_attempts,
                          "outcome": "timeout" if exhausted else "requeued"})
        lines.append(f"lease expired: allocation {alloc_id} of task {task_name or task_id} "
                     f"held by node {node_name or node_id or '-'} (attempt {attempt} of "
                     f"{max_attempts}): " + ("timed out, no attempt left" if exhausted
                                              else "requeued for another node"))
    if lines:
        def tell() -> None:
            for line in lines:
                log.info("%s", line)

        after_commit(session, tell)
    stale = finish_stale_runs(session, now, settings)
    nonces = purge_nonces(session, now)
    return {"requeued": requeued, "timed_out": timed_out, "runs_finished": stale,
            "nonces_purged": nonces}
