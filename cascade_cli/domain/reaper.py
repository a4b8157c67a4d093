"""Lease expiry: expired leases go back to pending (attempt counted) or to ``timeout``.

A plain function of (session, now, settings); the daemon calls it every
``parent.reaper_interval`` seconds. Each change is a conditional UPDATE on (id, status,
epoch), so several parent processes reaping the same database never double-count.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cascade_cli.config import Settings
from cascade_cli.store import leases
from cascade_cli.store.engine import after_commit
from cascade_cli.store.events import log_event
from cascade_cli.store.nodes import purge_nonces
from cascade_cli.store.runs import allocation_finished, finish_stale_runs

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger("cascade.reaper")


def reap_expired(session: Session, now: datetime, settings: Settings, *,
                 batch: int = 500) -> dict[str, Any]:
    requeued = timed_out = 0
    lines: list[str] = []
    for lease in leases.expired(session, now, limit=batch):
        if not leases.expire(session, now, lease):
            continue  # another parent process, or the owner, got there first
        attempt, max_attempts = lease.attempt, lease.max_attempts
        if lease.exhausted:
            timed_out += 1
            allocation_finished(session, now, lease.schedule_run_id)
        else:
            requeued += 1
        log_event(session, now, "lease_expired", node_id=lease.node_id, status="warning",
                  task_id=lease.task_id, allocation_id=lease.allocation_id,
                  detail={"attempt": attempt, "max_attempts": max_attempts,
                          "outcome": "timeout" if lease.exhausted else "requeued"})
        lines.append(f"lease expired: allocation {lease.allocation_id} of task "
                     f"{lease.task_name or lease.task_id} held by node "
                     f"{lease.node_name or lease.node_id or '-'} (attempt {attempt} of "
                     f"{max_attempts}): " + ("timed out, no attempt left" if lease.exhausted
                                              else "requeued for another node"))
    if lines:
        def tell() -> None:
            for line in lines:
                log.info("%s", line)

        after_commit(session, tell)
    stale = finish_stale_runs(session, now)
    nonces = purge_nonces(session, now)
    return {"requeued": requeued, "timed_out": timed_out, "runs_finished": stale,
            "nonces_purged": nonces}
