"""Run completion: a run is finished when all of its allocations are terminal.

``schedule_runs.open_allocations`` counts the allocations that are not terminal yet. Every
terminal transition (completed, failed, timeout) happens exactly once per allocation (the
state machine guards it) and is recorded with ``allocation_finished``. The counter is
decremented once per run per transaction, by the total, just before the transaction commits
(``engine.before_commit``, run by ``Store.session``; transitions a savepoint rollback undid
are left out); the decrement that brings it to zero finishes the run and queues its
notifications, exactly once.

Why just before the commit: the decrement locks the run's row until the commit, and every
allocation of a run shares that row. Taken with the transition itself, one transaction held
it through all of its remaining work, and concurrent transactions (group-committed batches
on several database threads or parent processes) queued behind each other on it.

Why an UPDATE and not ``SELECT ... FOR UPDATE`` on the run: on PostgreSQL the allocations'
foreign key leaves ``FOR KEY SHARE`` locks on the run row, and two transactions upgrading
those to ``FOR UPDATE`` deadlock. A plain UPDATE of a non-key column takes ``FOR NO KEY
UPDATE``, which does not conflict with them; it also makes completion O(1) per allocation
instead of counting the run's open allocations every time.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Table, bindparam, func, select, update
from sqlalchemy.orm import Session, SessionTransaction

from cascade_cli.config import Settings
from cascade_cli.store.engine import after_commit, before_commit, current_transaction, undone
from cascade_cli.store.events import log_event
from cascade_cli.store.models import (
    NON_TERMINAL_STATES,
    RUN_FINISHED,
    RUN_RUNNING,
    Allocation,
    FeedResult,
    MessageTask,
    ScheduleRun,
)
from cascade_cli.store.prepared import Prepared

log = logging.getLogger("cascade.runs")


def _finish(session: Session, now: datetime, run_id: str, settings: Settings) -> bool:
    result = session.execute(
        update(ScheduleRun).where(ScheduleRun.id == run_id, ScheduleRun.status == RUN_RUNNING)
        .values(status=RUN_FINISHED, finished_at=now, open_allocations=0)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False  # already finished by someone else
    from cascade_cli.domain.notify import queue_run_notifications

    queued = queue_run_notifications(session, now, run_id, settings)
    task_id = session.scalar(select(ScheduleRun.task_id).where(ScheduleRun.id == run_id))
    log_event(session, now, "run_finished", task_id=task_id, count=queued,
              detail={"schedule_run_id": run_id, "notifications": queued})
    if log.isEnabledFor(logging.INFO):
        line = _finished_line(session, run_id, task_id, queued)
        after_commit(session, lambda: log.info("%s", line))
    return True


def _finished_line(session: Session, run_id: str, task_id: str | None, queued: int) -> str:
    """What the operator wants to know when a run ends: how its allocations and feeds did.
    Two small queries, once per run."""
    by_status: dict[str, int] = {}
    new_articles = 0
    for status, n, new in session.execute(
            select(Allocation.status, func.count(), func.coalesce(
                func.sum(Allocation.new_article_count), 0))
            .where(Allocation.schedule_run_id == run_id).group_by(Allocation.status)):
        by_status[str(status)] = int(n)
        new_articles += int(new or 0)
    failed_feeds = session.scalar(select(func.count()).select_from(FeedResult).where(
        FeedResult.schedule_run_id == run_id, FeedResult.status == "failed")) or 0
    name = session.scalar(select(MessageTask.name).where(MessageTask.id == task_id)) \
        if task_id else None
    counts = ", ".join(f"{n} {status}" for status, n in sorted(by_status.items())) or "none"
    return (f"run {run_id} of task {name or task_id} finished: allocations {counts}; "
            f"{int(failed_feeds)} feeds failed; {new_articles} new articles; "
            f"{queued} notifications queued")


_RUNS = cast(Table, ScheduleRun.__table__)
# Only a running run counts down: a finished one (the reaper's safety net may finish a run
# before the transaction's own decrement) is left as it is.
_DECREMENT = (update(_RUNS).where(_RUNS.c.id == bindparam("b_id"),
                                  _RUNS.c.status == RUN_RUNNING)
              .values(open_allocations=_RUNS.c.open_allocations - bindparam("b_by")))
_DECREMENT_RETURNING = Prepared(_DECREMENT.returning(_RUNS.c.open_allocations))
_COUNTER = Prepared(select(_RUNS.c.open_allocations).where(_RUNS.c.id == bindparam("b_id")))
_SETTLE = "cascade.runs.settle"


def _decrement(conn: Connection, run_id: str, by: int) -> int | None:
    """The run's counter after taking ``by`` off; None if the run is not running."""
    params = {"b_id": run_id, "b_by": by}
    if conn.dialect.update_returning:  # PostgreSQL, SQLite
        return _DECREMENT_RETURNING.execute(conn, params).scalar()  # type: ignore[no-any-return]
    # MySQL/MariaDB: no RETURNING; our UPDATE holds the row lock, so this read is ours
    if conn.execute(_DECREMENT, params).rowcount != 1:
        return None
    return _COUNTER.execute(conn, {"b_id": run_id}).scalar()  # type: ignore[no-any-return]


def allocation_finished(session: Session, now: datetime, run_id: str,
                        settings: Settings) -> None:
    """Record one allocation of ``run_id`` becoming terminal, in the transition's own
    transaction. Call exactly once per terminal transition. The run's counter goes down when
    the transaction commits (see the module docstring), and the run finishes at zero."""
    settlement = before_commit(session, _SETTLE, lambda: _Settlement(now, settings))
    settlement.add(run_id, current_transaction(session))


class _Settlement:
    """A transaction's terminal transitions per run, applied just before it commits."""

    def __init__(self, now: datetime, settings: Settings) -> None:
        self.now = now
        self.settings = settings
        self.transitions: list[tuple[str, SessionTransaction | None]] = []

    def add(self, run_id: str, transaction: SessionTransaction | None) -> None:
        self.transitions.append((run_id, transaction))

    def __call__(self, session: Session) -> None:
        by_run: dict[str, int] = {}
        for run_id, transaction in self.transitions:
            if not undone(session, transaction):  # a savepoint rollback took it back
                by_run[run_id] = by_run.get(run_id, 0) + 1
        conn = session.connection()
        for run_id in sorted(by_run):  # one order for every transaction: no deadlock
            remaining = _decrement(conn, run_id, by_run[run_id])
            if remaining is None or remaining > 0:
                continue
            if remaining < 0:  # counter not maintained for this run (made outside dispatch)
                finish_run_if_done(session, self.now, run_id, self.settings)
            else:
                _finish(session, self.now, run_id, self.settings)


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
