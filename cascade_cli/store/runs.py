"""Run completion: a run is finished when all of its allocations are terminal."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cascade_cli.config import Settings
from cascade_cli.store.events import log_event
from cascade_cli.store.models import (
    RUN_FINISHED,
    RUN_RUNNING,
    TERMINAL_STATES,
    Allocation,
    ScheduleRun,
)

log = logging.getLogger(__name__)


def finish_run_if_done(session: Session, now: datetime, run_id: str, settings: Settings) -> bool:
    """Mark the run finished and queue its notifications, exactly once.

    The run row is locked first (FOR UPDATE where the database has it; SQLite serialises
    writers anyway), so two nodes completing the last two allocations at the same moment
    cannot both miss, or both see, the end of the run.
    """
    q = select(ScheduleRun).where(ScheduleRun.id == run_id)
    if session.get_bind().dialect.name != "sqlite":
        q = q.with_for_update()
    run = session.scalar(q)
    if run is None or run.status != RUN_RUNNING:
        return False
    open_count = session.scalar(select(func.count()).select_from(Allocation).where(
        Allocation.schedule_run_id == run_id, Allocation.status.not_in(TERMINAL_STATES)))
    if open_count:
        return False
    run.status = RUN_FINISHED
    run.finished_at = now
    queued = 0
    try:
        from cascade_cli.parent.notify import queue_run_notifications
    except ImportError:  # pragma: no cover - notify lands separately
        queue_run_notifications = None  # type: ignore[assignment]
    if queue_run_notifications is not None:
        queued = queue_run_notifications(session, now, run_id, settings)
    log_event(session, now, "run_finished", task_id=run.task_id, count=queued,
              detail={"schedule_run_id": run_id, "notifications": queued})
    return True


def finish_stale_runs(session: Session, now: datetime, settings: Settings, *,
                      limit: int = 100) -> int:
    """Safety net for the reaper: finish running runs whose allocations are all terminal."""
    open_runs = select(Allocation.schedule_run_id).where(
        Allocation.status.not_in(TERMINAL_STATES))
    ids = list(session.scalars(select(ScheduleRun.id).where(
        ScheduleRun.status == RUN_RUNNING, ScheduleRun.id.not_in(open_runs)).limit(limit)))
    return sum(1 for run_id in ids if finish_run_if_done(session, now, run_id, settings))
