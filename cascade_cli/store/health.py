"""Read-only facts about the parent's recent work, asked by ``cascade doctor``.

Doctor's parent checks judge; the queries they need live here so that no SQL sits in the
doctor modules (and the same facts can back an admin route later). Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from cascade_cli.store.models import (
    ACTIVE_STATES,
    DELIVERY_DEAD,
    DELIVERY_PENDING,
    FAILED,
    PENDING,
    RUN_RUNNING,
    TIMEOUT,
    AdminToken,
    Allocation,
    Delivery,
    Event,
    Feed,
    FeedResult,
    MessageTask,
    Node,
    ScheduleRun,
)


@dataclass(frozen=True)
class LostAllocation:
    """An allocation that ended as a whole (not per feed): the child crashed or reported
    ``failed`` (执行父节点任务失败), or its lease ran out after the last attempt."""

    node_id: str | None
    task_name: str
    status: str  # failed | timeout
    error: str | None
    updated_at: datetime


@dataclass(frozen=True)
class FeedOutcome:
    node_id: str | None
    feed_id: str
    status: str
    error: str | None


@dataclass(frozen=True)
class DeliveryAttempt:
    task_id: str
    status: str
    attempts: int
    last_error: str | None
    last_status_code: int | None
    updated_at: datetime


def node_names(s: Session) -> dict[str, str]:
    return {node_id: name for node_id, name in s.execute(select(Node.id, Node.name))}


def task_names(s: Session) -> dict[str, str]:
    return {task_id: name for task_id, name in s.execute(select(MessageTask.id,
                                                                MessageTask.name))}


def lost_allocations(s: Session, since: datetime, limit: int = 500) -> list[LostAllocation]:
    rows = s.execute(select(Allocation.node_id, Allocation.task_name, Allocation.status,
                            Allocation.error_message, Allocation.updated_at)
                     .where(Allocation.status.in_((FAILED, TIMEOUT)),
                            Allocation.updated_at >= since)
                     .order_by(Allocation.updated_at.desc()).limit(limit))
    return [LostAllocation(n, t or "", st, e, u) for n, t, st, e, u in rows]


def feed_outcomes(s: Session, since: datetime) -> list[FeedOutcome]:
    rows = s.execute(select(FeedResult.node_id, FeedResult.feed_id, FeedResult.status,
                            FeedResult.error).where(FeedResult.created_at >= since))
    return [FeedOutcome(n, f, st, e) for n, f, st, e in rows]


def dead_deliveries(s: Session) -> list[DeliveryAttempt]:
    return _attempts(s, select(*_DELIVERY_COLS).where(Delivery.status == DELIVERY_DEAD)
                     .order_by(Delivery.updated_at.desc()))


def recent_attempted_deliveries(s: Session, since: datetime, limit: int
                                ) -> list[DeliveryAttempt]:
    """The newest deliveries that were tried at least once since ``since``, newest first."""
    return _attempts(s, select(*_DELIVERY_COLS).where(Delivery.attempts > 0,
                                                      Delivery.updated_at >= since)
                     .order_by(Delivery.updated_at.desc()).limit(limit))


def pending_deliveries(s: Session) -> tuple[int, datetime | None]:
    """How many deliveries wait, and since when the oldest."""
    n, oldest = s.execute(select(func.count(), func.min(Delivery.created_at))
                          .where(Delivery.status == DELIVERY_PENDING)).one()
    return int(n or 0), oldest


def cron_run_exists(s: Session, task_id: str, tick: datetime) -> bool:
    """Did any process create the run of this tick (the scheduler's unique key)?"""
    return s.scalar(select(ScheduleRun.id).where(ScheduleRun.task_id == task_id,
                                                 ScheduleRun.scheduled_for == tick)
                    .limit(1)) is not None


def running_run_since(s: Session, task_id: str, before: datetime) -> bool:
    """Was a run of the task still running when ``before`` came (overlap: skip)?"""
    return s.scalar(select(ScheduleRun.id).where(ScheduleRun.task_id == task_id,
                                                 ScheduleRun.status == RUN_RUNNING,
                                                 ScheduleRun.created_at <= before)
                    .limit(1)) is not None


def scheduler_event_since(s: Session, task_id: str, since: datetime) -> bool:
    """A scheduler event about the task (misfire, catch-up, invalid cron) since ``since``:
    proof that a scheduler looked at it."""
    return s.scalar(select(Event.id).where(
        Event.task_id == task_id, Event.created_at >= since,
        Event.operation.in_(("schedule_misfire", "schedule_catch_up",
                             "schedule_invalid_cron"))).limit(1)) is not None


# --- plumbing ------------------------------------------------------------------------------

_DELIVERY_COLS = (Delivery.task_id, Delivery.status, Delivery.attempts, Delivery.last_error,
                  Delivery.last_status_code, Delivery.updated_at)


def _attempts(s: Session, query: Select[str, str, int, str | None, int | None, datetime]
              ) -> list[DeliveryAttempt]:
    return [DeliveryAttempt(t, st, int(a or 0), e, c, u) for t, st, a, e, c, u in s.execute(query)]


# --- allocations held or waiting -----------------------------------------------------------


def pending_summary(s: Session) -> tuple[int, datetime | None]:
    """How many allocations are pending, and when the oldest was dispatched."""
    n, oldest = s.execute(select(func.count(), func.min(Allocation.dispatched_at))
                          .where(Allocation.status == PENDING)).one()
    return int(n or 0), oldest


def expired_leases(s: Session, before: datetime, limit: int = 50) -> list[Allocation]:
    """Active allocations whose lease ended before ``before`` (the reaper should have
    requeued them), the oldest expiry first."""
    return list(s.scalars(select(Allocation).where(
        Allocation.status.in_(ACTIVE_STATES), Allocation.lease_expires_at < before)
        .order_by(Allocation.lease_expires_at).limit(limit)))


def active_allocations(s: Session) -> list[Allocation]:
    return list(s.scalars(select(Allocation).where(Allocation.status.in_(ACTIVE_STATES))))


def all_nodes(s: Session) -> list[Node]:
    return list(s.scalars(select(Node)))


def enabled_task_templates(s: Session) -> list[tuple[str, str | None, int]]:
    """(task id, template, message type) of every enabled task: doctor test-renders them
    after this read, outside any transaction."""
    rows = s.execute(select(MessageTask.id, MessageTask.message_template,
                            MessageTask.message_type).where(MessageTask.status == 1))
    return [(tid, text, mtype) for tid, text, mtype in rows]


def tasks_by_name(s: Session) -> list[MessageTask]:
    return list(s.scalars(select(MessageTask).order_by(MessageTask.name)))


def all_feeds(s: Session) -> dict[str, Feed]:
    return {fd.id: fd for fd in s.scalars(select(Feed))}


def unrevoked_admin_tokens(s: Session) -> list[AdminToken]:
    return list(s.scalars(select(AdminToken).where(AdminToken.revoked_at.is_(None))))
