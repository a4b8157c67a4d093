"""The cron scheduler: every enabled task with a cron expression gets one run per tick.

Exactly once, with several parent processes on one database
    A tick is identified by (task, nominal fire time). ``dispatch`` inserts the run row in a
    savepoint and the unique constraint ``uq_run_task_tick`` on (task_id, scheduled_for) lets
    only one process win; the losers see IntegrityError, roll the savepoint back and move on.
    Jitter never changes ``scheduled_for`` (only *when* a process fires it), so every process
    competes for the same row.

What was already considered (restart-safe)
    The last tick a task considered is ``max(scheduled_for)`` of its cron runs in the database,
    and, inside one process, an in-memory mark (which also covers ticks that produced no run:
    skipped for overlap, dropped as misfires, lost to another process). The task's
    ``created_at``/``updated_at`` are a floor: ticks before a task was created, edited or
    re-enabled are never caught up. After a restart the database tells where to resume; only a
    tick skipped for overlap inside the grace window may still fire late after a restart.

Misfires (ticks missed while no parent ran)
    A tick is on time when it fires within the grace window (``task.misfire_grace``, else
    ``parent.scheduler.misfire_grace``) after its due time. Later than that:
    ``misfire_policy: skip`` (default) drops it and waits for the next tick;
    ``misfire_policy: run_once`` fires ONE catch-up run for the most recent missed tick, however
    many were missed. Missed ticks older than the most recent one are always coalesced.

Overlap
    ``overlap_policy: skip`` (default): a tick is skipped while the task's previous run is still
    running. ``allow``: every tick gets a run.

Jitter
    ``task.jitter`` seconds: a tick is due at ``tick + offset`` with the offset derived from a
    hash of (task id, tick), so every process computes the same offset without talking.

Invalid cron
    Recorded once in ``message_tasks.last_error`` and the event log (a conditional UPDATE makes
    one process report it); the task is skipped, the others run as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from cascade_cli.clock import Clock, isoformat_z
from cascade_cli.config import Settings
from cascade_cli.cron import CronSpec, parse_cron, timezone_for
from cascade_cli.domain import dispatch as dispatching
from cascade_cli.domain.dispatch import SkipReason
from cascade_cli.domain.metrics import Metrics
from cascade_cli.errors import InvalidInput, NotFound
from cascade_cli.store import runs as run_repo
from cascade_cli.store import tasks as task_repo
from cascade_cli.store.engine import Store
from cascade_cli.store.events import log_event
from cascade_cli.store.models import MessageTask

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger("cascade.scheduler")

INVALID_CRON_PREFIX = "invalid cron: "
_EPS = timedelta(microseconds=1)



class TickAction(StrEnum):
    """What ``Scheduler.tick()`` did with a task's tick (the metric's ``action`` label)."""

    FIRED = "fired"
    CATCH_UP = "catch_up"
    SKIPPED_OVERLAP = "skipped_overlap"
    MISFIRE_SKIPPED = "misfire_skipped"
    ALREADY_FIRED = "already_fired"
    DISPATCH_SKIPPED = "dispatch_skipped"
    INVALID_CRON = "invalid_cron"
    ERROR = "error"


FIRED = TickAction.FIRED
CATCH_UP = TickAction.CATCH_UP
SKIPPED_OVERLAP = TickAction.SKIPPED_OVERLAP
MISFIRE_SKIPPED = TickAction.MISFIRE_SKIPPED
ALREADY_FIRED = TickAction.ALREADY_FIRED
DISPATCH_SKIPPED = TickAction.DISPATCH_SKIPPED
INVALID_CRON = TickAction.INVALID_CRON
ERROR = TickAction.ERROR


@dataclass
class TickResult:
    task_id: str
    action: TickAction
    scheduled_for: str | None = None
    schedule_run_id: str | None = None
    detail: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _TaskView:
    """What the scheduler needs of a task, read once per pass."""

    id: str
    name: str
    cron_exp: str
    overlap_policy: str
    misfire_policy: str
    misfire_grace: float | None
    jitter: float
    last_error: str | None
    floor: datetime  # max(created_at, updated_at)


def jitter_offset(task_id: str, tick: datetime, jitter: float) -> float:
    """Deterministic offset in [0, jitter) seconds for this (task, tick)."""
    if not jitter or jitter <= 0:
        return 0.0
    digest = hashlib.sha256(f"{task_id}|{isoformat_z(tick)}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return round(fraction * float(jitter), 6)


def scheduler_timezone(settings: Settings) -> tzinfo:
    """``parent.scheduler.timezone`` when the configuration has that key, else UTC."""
    name = getattr(settings.parent.scheduler, "timezone", None)
    try:
        return timezone_for(name)
    except InvalidInput:
        log.warning("parent.scheduler.timezone %r is unknown; cron runs in UTC", name)
        return UTC


def next_runs(task: MessageTask, after: datetime, n: int, settings: Settings
              ) -> list[dict[str, Any]]:
    """The next ``n`` ticks of a task (nominal time and the time it fires with jitter)."""
    spec = parse_cron(task.cron_exp)
    tz = scheduler_timezone(settings)
    out: list[dict[str, Any]] = []
    cur = after
    for _ in range(max(0, n)):
        cur = spec.next_after(cur, tz)
        offset = jitter_offset(task.id, cur, task.jitter or 0.0)
        out.append({"scheduled_for": isoformat_z(cur),
                    "fires_at": isoformat_z(cur + timedelta(seconds=offset)),
                    "jitter_offset": offset})
    return out


class Scheduler:
    """One ``tick()`` is one pass over the enabled tasks; ``run()`` repeats it."""

    def __init__(self, store: Store, clock: Clock, settings: Settings, *,
                 on_dispatch: Callable[[], None] | None = None,
                 metrics: Metrics | None = None) -> None:
        # on_dispatch: called (from the tick's thread) after a run was created, e.g.
        # ``Waiters.notify_threadsafe`` so long-polling children wake at once.
        self.on_dispatch = on_dispatch
        self.metrics = metrics
        self.store = store
        self.clock = clock
        self.settings = settings
        self.tz = scheduler_timezone(settings)
        # task id -> last tick this process considered (fired, skipped, dropped or lost).
        self._considered: dict[str, datetime] = {}

    # --- the pass -------------------------------------------------------------------------

    def tick(self) -> list[TickResult]:
        now = self.clock.now()
        tasks, db_last = self._load(now)
        results: list[TickResult] = []
        for task in tasks:
            try:
                result = self._consider(task, now, db_last.get(task.id))
            except Exception as exc:  # one broken task never stops the others
                log.exception("scheduler: task %s failed", task.id)
                result = TickResult(task.id, ERROR, detail=f"{type(exc).__name__}: {exc}")
            if result is not None:
                results.append(result)
                self._tell(task, result)
        if self.on_dispatch and any(r.action in (FIRED, CATCH_UP) for r in results):
            try:
                self.on_dispatch()
            except Exception:
                log.exception("scheduler: on_dispatch hook failed")
        live = {t.id for t in tasks}
        for gone in [k for k in self._considered if k not in live]:
            del self._considered[gone]  # deleted or disabled tasks: start afresh if back
        return results

    def _load(self, now: datetime) -> tuple[list[_TaskView], dict[str, datetime]]:
        with self.store.session() as s:
            tasks = [_TaskView(t.id, t.name, t.cron_exp or "", t.overlap_policy or "skip",
                               t.misfire_policy or "skip", t.misfire_grace,
                               float(t.jitter or 0.0), t.last_error,
                               max(t.created_at, t.updated_at or t.created_at))
                     for t in task_repo.enabled_cron_tasks(s)]
            unknown = [t.id for t in tasks if t.id not in self._considered]
            db_last = run_repo.last_cron_ticks(s, unknown)
        return tasks, db_last

    def _consider(self, task: _TaskView, now: datetime, db_last: datetime | None
                  ) -> TickResult | None:
        try:
            spec = parse_cron(task.cron_exp)
        except InvalidInput as exc:
            self._report_invalid(task, now, str(exc))
            return TickResult(task.id, INVALID_CRON, detail=str(exc))
        if task.last_error and task.last_error.startswith(INVALID_CRON_PREFIX):
            self._clear_invalid(task)

        marks = [task.floor, self._considered.get(task.id), db_last]
        baseline = max(m for m in marks if m is not None)
        tick = self._latest_due_tick(spec, task, now, baseline)
        if tick is None:
            return None
        result = self._decide(task, now, tick)
        # Remembered only once handled: a database error leaves the tick to the next pass.
        self._considered[task.id] = tick
        return result

    def _decide(self, task: _TaskView, now: datetime, tick: datetime) -> TickResult:
        due_at = tick + timedelta(seconds=jitter_offset(task.id, tick, task.jitter))
        lateness = (now - due_at).total_seconds()
        grace = (task.misfire_grace if task.misfire_grace is not None
                 else self.settings.parent.scheduler.misfire_grace)
        catch_up = False
        if lateness > grace:
            if task.misfire_policy != "run_once":
                self._event(task, now, "schedule_misfire", "warning",
                            f"tick {isoformat_z(tick)} missed by {lateness:.0f}s "
                            f"(grace {grace:g}s); skipped to the next tick",
                            {"scheduled_for": isoformat_z(tick), "late_seconds": lateness,
                             "policy": "skip"})
                return TickResult(task.id, MISFIRE_SKIPPED, isoformat_z(tick),
                                  detail=f"late by {lateness:.0f}s")
            catch_up = True
        return self._fire(task, now, tick, catch_up, lateness)

    def _latest_due_tick(self, spec: CronSpec, task: _TaskView, now: datetime,
                         baseline: datetime) -> datetime | None:
        """The most recent tick after ``baseline`` whose (jittered) due time has come."""
        cand = spec.prev_at_or_before(now, self.tz)
        # With jitter the newest tick may not be due yet while the one before is.
        for _ in range(2):
            if cand is None or cand <= baseline:
                return None
            offset = jitter_offset(task.id, cand, task.jitter)
            if cand + timedelta(seconds=offset) <= now:
                return cand
            cand = spec.prev_at_or_before(cand - _EPS, self.tz)
        return None

    def _fire(self, task: _TaskView, now: datetime, tick: datetime, catch_up: bool,
              lateness: float) -> TickResult:
        when = isoformat_z(tick)
        with self.store.session() as s:
            existing = run_repo.run_at_tick(s, task.id, tick)
            if existing:
                return TickResult(task.id, ALREADY_FIRED, when, existing)
            if task.overlap_policy != "allow":
                running = run_repo.unfinished_run(s, task.id)
                if running:
                    log.info("cron tick %s of task %s skipped: run %s still running "
                             "(overlap_policy skip)", when, task.name, running)
                    return TickResult(task.id, SKIPPED_OVERLAP, when, running,
                                      detail="previous run still running")
            # dispatch inserts the run in a savepoint: losing the race to another process
            # shows up as a skip ("already dispatched"), never as an exception here.
            result = dispatching.dispatch(s, now, self.settings, task_id=task.id,
                                          trigger="cron", scheduled_for=tick)
            if result.runs:
                run_id = result.runs[0].schedule_run_id
                if catch_up:
                    log_event(s, now, "schedule_catch_up", status="warning", task_id=task.id,
                              detail={"scheduled_for": when, "late_seconds": lateness,
                                      "schedule_run_id": run_id, "policy": "run_once"})
                return TickResult(task.id, CATCH_UP if catch_up else FIRED, when, run_id)
            reason = "; ".join(x.message for x in result.skips) or "nothing to do"
            if any(x.reason is SkipReason.ALREADY_DISPATCHED for x in result.skips):
                return TickResult(task.id, ALREADY_FIRED, when, detail=reason)
            return TickResult(task.id, DISPATCH_SKIPPED, when, detail=reason)

    # --- reporting ------------------------------------------------------------------------

    def _tell(self, task: _TaskView, result: TickResult) -> None:
        """One line per tick handled, and the fire/skip counters (a few per minute at most)."""
        if self.metrics is not None:
            self.metrics.scheduler_ticks.labels(result.action).inc()
        if result.action in (FIRED, CATCH_UP):
            log.info("cron fired task %s for %s%s: run %s", task.name, result.scheduled_for,
                     " (catch-up after downtime)" if result.action == CATCH_UP else "",
                     result.schedule_run_id)
        elif result.action == DISPATCH_SKIPPED:
            log.warning("cron tick %s of task %s not dispatched: %s", result.scheduled_for,
                        task.name, result.detail)

    def _report_invalid(self, task: _TaskView, now: datetime, message: str) -> None:
        text = (INVALID_CRON_PREFIX + message)[:4000]
        with self.store.session() as s:
            # Conditional: only the process that changes last_error logs the event, once.
            if task_repo.set_last_error(s, task.id, text):
                log.warning("scheduler: task %s (%s) has an %s", task.name, task.id, text)
                log_event(s, now, "schedule_invalid_cron", status="failed", task_id=task.id,
                          error=text, detail={"cron_exp": task.cron_exp})

    def _clear_invalid(self, task: _TaskView) -> None:
        with self.store.session() as s:
            task_repo.clear_last_error(s, task.id, INVALID_CRON_PREFIX)

    def _event(self, task: _TaskView, now: datetime, op: str, status: str, error: str,
               detail: dict[str, Any]) -> None:
        log.warning("cron task %s: %s", task.name, error)
        with self.store.session() as s:
            log_event(s, now, op, status=status, task_id=task.id, error=error, detail=detail)

    # --- the loop -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        interval = self.settings.parent.scheduler.tick_interval
        log.info("scheduler started (tick every %gs)", interval)
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.tick)
            except Exception:  # a database outage must not kill the loop
                log.exception("scheduler pass failed; retrying in %gs", interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
        log.info("scheduler stopped")


def session_next_runs(s: Session, task_ident: str | None, now: datetime, n: int,
                      settings: Settings) -> list[dict[str, Any]]:
    """Rows for ``cascade tasks next``: one per task (all tasks with a cron when no ident)."""
    if task_ident:
        task = task_repo.find_task(s, task_ident)
        if task is None:
            raise NotFound("message task", task_ident,
                           hint="'cascade tasks list' shows the tasks")
        tasks = [task]
    else:
        tasks = task_repo.tasks_with_cron(s)
    rows: list[dict[str, Any]] = []
    for task in tasks:
        row: dict[str, Any] = {"task_id": task.id, "task_name": task.name,
                               "cron_exp": task.cron_exp, "enabled": task.status == 1,
                               "next": [], "error": None}
        if not task.cron_exp:
            row["error"] = "task has no cron expression"
        else:
            try:
                row["next"] = next_runs(task, now, n, settings)
            except InvalidInput as exc:
                row["error"] = str(exc)
        rows.append(row)
    return rows
