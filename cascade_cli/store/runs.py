"""Run completion: a run is finished when all of its allocations are terminal.

``schedule_runs.open_allocations`` counts the allocations that are not terminal yet. Every
terminal transition (completed, failed, timeout) happens exactly once per allocation (the
state machine guards it), and decrements the counter with one atomic UPDATE. The transition
that brings it to zero finishes the run and queues its notifications, exactly once.

Why an UPDATE and not ``SELECT ... FOR UPDATE`` on the run: on PostgreSQL the allocations'
foreign key leaves ``FOR KEY SHARE`` locks on the run row, and two transactions upgrading
those to ``FOR UPDATE`` deadlock. A plain UPDATE of a non-key column takes ``FOR NO KEY
UPDATE``, which does not conflict with them; it also makes completion O(1) per allocation
instead of counting the run's open allocations every time.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Select, Table, Update, bindparam, func, select, update
from sqlalchemy.orm import Session

from cascade_cli.config import Settings
from cascade_cli.store.events import log_event
from cascade_cli.store.models import (
    NON_TERMINAL_STATES,
    RUN_FINISHED,
    RUN_RUNNING,
    Allocation,
    ScheduleRun,
)
from cascade_cli.store.prepared import Prepared

log = logging.getLogger(__name__)


def _finish(session: Session, now: datetime, run_id: str, settings: Settings) -> bool:
    result = session.execute(
        update(ScheduleRun).where(ScheduleRun.id == run_id, ScheduleRun.status == RUN_RUNNING)
        .values(status=RUN_FINISHED, finished_at=now, open_allocations=0)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False  # already finished by someone else
    from cascade_cli.parent.notify import queue_run_notifications

    queued = queue_run_notifications(session, now, run_id, settings)
    task_id = session.scalar(select(ScheduleRun.task_id).where(ScheduleRun.id == run_id))
    log_event(session, now, "run_finished", task_id=task_id, count=queued,
              detail={"schedule_run_id": run_id, "notifications": queued})
    return True


_RUNS = cast(Table, ScheduleRun.__table__)
_DECREMENT = (update(_RUNS).where(_RUNS.c.id == bindparam("b_id"))
              .values(open_allocations=_RUNS.c.open_allocations - 1))
_DECREMENT_RETURNING = Prepared(_DECREMENT.returning(_RUNS.c.open_allocations))


def _decrement(conn: Connection, run_id: str) -> int | None:
    if conn.dialect.name in ("postgresql", "sqlite"):
        return _DECREMENT_RETURNING.execute(conn, {"b_id": run_id}).scalar()  # type: ignore[no-any-return]
    # MySQL/MariaDB: no RETURNING; our UPDATE holds the row lock, so this read is ours
    conn.execute(_DECREMENT, {"b_id": run_id})
    return conn.execute(select(_RUNS.c.open_allocations).where(_RUNS.c.id == run_id)).scalar()


def with_run_decrement(transition: Update) -> Select[Any]:
    """PostgreSQL: a terminal transition (an UPDATE ... RETURNING of allocation rows) and the
    decrement of its run's counter as one statement, a data-modifying CTE: the rows the
    transition returns, plus ``run_open_allocations``, the counter after the decrement (NULL
    when the transition matched nothing). Pass that value to ``allocation_finished``. One
    round trip instead of two on every completion and failure report."""
    done = transition.cte("done")
    decrement = (update(_RUNS).where(_RUNS.c.id == done.c.schedule_run_id)
                 .values(open_allocations=_RUNS.c.open_allocations - 1)
                 .returning(_RUNS.c.open_allocations).cte("decrement"))
    return select(*done.c, select(decrement.c.open_allocations).scalar_subquery()
                  .label("run_open_allocations"))


def allocation_finished(session: Session, now: datetime, run_id: str,
                        settings: Settings, *, remaining: int | None = None) -> bool:
    """Record one allocation of ``run_id`` becoming terminal; finish the run at zero.

    Call exactly once per terminal transition, in the transition's own transaction.
    ``remaining``: the run's counter already decremented by the transition's own statement
    (``with_run_decrement``).
    """
    # Core statements on the connection (not ORM-enabled ones): this runs on every terminal
    # transition, on the parent's hot path.
    if remaining is None:
        remaining = _decrement(session.connection(), run_id)
    if remaining is None or remaining > 0:
        return False
    if remaining < 0:  # counter not maintained for this run (made outside dispatch): count
        return finish_run_if_done(session, now, run_id, settings)
    return _finish(session, now, run_id, settings)


def finish_run_if_done(session: Session, now: datetime, run_id: str, settings: Settings) -> bool:
    """Finish the run if none of its allocations is open (the reaper's safety net)."""
    open_count = session.scalar(select(func.count()).select_from(Allocation).where(
        Allocation.schedule_run_id == run_id, Allocation.status.in_(NON_TERMINAL_STATES)))
    if open_count:
        return False
    return _finish(session, now, run_id, settings)


def finish_stale_runs(session: Session, now: datetime, settings: Settings, *,
                      limit: int = 100) -> int:
    """Finish running runs whose allocations are all terminal (e.g. a run left with no
    allocation at all, or a counter disturbed by a manual database edit)."""
    open_runs = select(Allocation.schedule_run_id).where(
        Allocation.status.in_(NON_TERMINAL_STATES))
    ids = list(session.scalars(select(ScheduleRun.id).where(
        ScheduleRun.status == RUN_RUNNING, ScheduleRun.id.not_in(open_runs)).limit(limit)))
    return sum(1 for run_id in ids if finish_run_if_done(session, now, run_id, settings))
