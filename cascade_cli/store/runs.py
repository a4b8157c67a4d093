"""Run completion: a run is finished when all of its allocations are terminal.

``schedule_runs.open_allocations`` counts the allocations that are not terminal yet. Every
terminal transition (completed, failed, timeout) happens exactly once per allocation (the
state machine guards it) and is recorded with ``allocation_finished``. The counter is
decremented once per run per transaction, by the total, just before the transaction commits
(``engine.before_commit``, run by ``Store.session``; transitions a savepoint rollback undid
are left out); the decrement that brings it to zero finishes the run, exactly once.

Finishing a run only marks it finished and records it (event and log line). Its
notifications are queued later by the notifier (``domain.notify``), which picks up finished
runs whose ``notified_at`` is still empty (``unnotified_runs``) and claims each with a
conditional UPDATE (``claim_notification``): several parent processes, or a CLI command
that finished runs without a notifier running, never queue a run twice or lose one.

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
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session, SessionTransaction

from cascade_cli.store.engine import (
    add_unless_taken,
    after_commit,
    before_commit,
    current_transaction,
    undone,
)
from cascade_cli.store.events import log_event
from cascade_cli.store.models import (
    NON_TERMINAL_STATES,
    RUN_FINISHED,
    RUN_RUNNING,
    Allocation,
    FeedResult,
    MessageTask,
    ScheduleRun,
    new_id,
)
from cascade_cli.store.prepared import Prepared

log = logging.getLogger("cascade.runs")


def _finish(session: Session, now: datetime, run_id: str) -> bool:
    result = session.execute(
        update(ScheduleRun).where(ScheduleRun.id == run_id, ScheduleRun.status == RUN_RUNNING)
        .values(status=RUN_FINISHED, finished_at=now, open_allocations=0)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False  # already finished by someone else
    task_id = session.scalar(select(ScheduleRun.task_id).where(ScheduleRun.id == run_id))
    log_event(session, now, "run_finished", task_id=task_id,
              detail={"schedule_run_id": run_id})
    if log.isEnabledFor(logging.INFO):
        line = _finished_line(session, run_id, task_id)
        after_commit(session, lambda: log.info("%s", line))
    return True


def _finished_line(session: Session, run_id: str, task_id: str | None) -> str:
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
            f"{int(failed_feeds)} feeds failed; {new_articles} new articles")


_RUNS = cast(Table, ScheduleRun.__table__)
_ALLOCATIONS = cast(Table, Allocation.__table__)
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


def allocation_finished(session: Session, now: datetime, run_id: str) -> None:
    """Record one allocation of ``run_id`` becoming terminal, in the transition's own
    transaction. Call exactly once per terminal transition. The run's counter goes down when
    the transaction commits (see the module docstring), and the run finishes at zero."""
    settlement = before_commit(session, _SETTLE, lambda: _Settlement(now))
    settlement.add(run_id, current_transaction(session))


class _Settlement:
    """A transaction's terminal transitions per run, applied just before it commits."""

    def __init__(self, now: datetime) -> None:
        self.now = now
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
                finish_run_if_done(session, self.now, run_id)
            else:
                _finish(session, self.now, run_id)


def finish_run_if_done(session: Session, now: datetime, run_id: str) -> bool:
    """Finish the run if none of its allocations is open (the reaper's safety net)."""
    open_count = session.scalar(select(func.count()).select_from(Allocation).where(
        Allocation.schedule_run_id == run_id, Allocation.status.in_(NON_TERMINAL_STATES)))
    if open_count:
        return False
    return _finish(session, now, run_id)


def finish_stale_runs(session: Session, now: datetime, *, limit: int = 100) -> int:
    """Finish running runs whose allocations are all terminal (e.g. a run left with no
    allocation at all, or a counter disturbed by a manual database edit)."""
    open_runs = select(Allocation.schedule_run_id).where(
        Allocation.status.in_(NON_TERMINAL_STATES))
    ids = list(session.scalars(select(ScheduleRun.id).where(
        ScheduleRun.status == RUN_RUNNING, ScheduleRun.id.not_in(open_runs)).limit(limit)))
    return sum(1 for run_id in ids if finish_run_if_done(session, now, run_id))


# --- a run's creation (dispatch) ----------------------------------------------------------


def unfinished_run(session: Session, task_id: str) -> str | None:
    """A running run of the task, if any ("previous run still running"): what overlap
    policy ``skip`` waits for."""
    return session.scalar(select(ScheduleRun.id).where(
        ScheduleRun.task_id == task_id, ScheduleRun.status == RUN_RUNNING).limit(1))


def run_at_tick(session: Session, task_id: str, scheduled_for: datetime) -> str | None:
    """The run of the task for this tick, if one was made (by any process)."""
    return session.scalar(select(ScheduleRun.id).where(
        ScheduleRun.task_id == task_id, ScheduleRun.scheduled_for == scheduled_for))


def last_cron_ticks(session: Session, task_ids: list[str]) -> dict[str, datetime]:
    """Task id -> the latest tick a cron run was made for (tasks without one left out)."""
    out: dict[str, datetime] = {}
    for start in range(0, len(task_ids), 500):
        chunk = task_ids[start:start + 500]
        out.update({tid: last for tid, last in session.execute(
            select(ScheduleRun.task_id, func.max(ScheduleRun.scheduled_for))
            .where(ScheduleRun.task_id.in_(chunk), ScheduleRun.trigger == "cron")
            .group_by(ScheduleRun.task_id)).all() if last is not None})
    return out


def start_run(session: Session, now: datetime, *, task_id: str, scheduled_for: datetime,
              trigger: str) -> ScheduleRun | None:
    """A new running run, inserted in a savepoint; None when the tick already has one (the
    unique (task, scheduled_for) constraint: another process, or an earlier pass, won)."""
    run = ScheduleRun(id=new_id(), task_id=task_id, scheduled_for=scheduled_for,
                      trigger=trigger, status=RUN_RUNNING, created_at=now)
    return run if add_unless_taken(session, run) else None


def add_allocations(session: Session, run: ScheduleRun, rows: list[dict[str, Any]]) -> None:
    """Insert the run's allocations (column dicts) and set its counters. Core executemany:
    planning 100,000 feeds must not build 10,000 ORM objects."""
    conn = session.connection()
    for start in range(0, len(rows), 2000):
        conn.execute(insert(_ALLOCATIONS), rows[start:start + 2000])
    run.allocation_count = len(rows)
    run.open_allocations = len(rows)


# --- notifications: the notifier's side ----------------------------------------------------


def unnotified_runs(session: Session, *, limit: int = 100) -> list[str]:
    """Finished runs whose notifications were not queued yet, oldest first (served by
    ``ix_run_status_notified``)."""
    return list(session.scalars(select(ScheduleRun.id).where(
        ScheduleRun.status == RUN_FINISHED, ScheduleRun.notified_at.is_(None))
        .order_by(ScheduleRun.finished_at, ScheduleRun.id).limit(limit)))


def claim_notification(session: Session, now: datetime, run_id: str) -> bool:
    """Mark the run's notifications as queued; True only for the one transaction whose
    UPDATE changed the row (a concurrent one waits for the row lock, then finds it set)."""
    result = session.execute(
        update(ScheduleRun).where(ScheduleRun.id == run_id, ScheduleRun.notified_at.is_(None))
        .values(notified_at=now).execution_options(synchronize_session=False))
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]
