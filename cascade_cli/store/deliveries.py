"""The notification outbox (table ``deliveries``): the rows the notifier queues, claims,
sends and records, and what ``cascade deliveries`` lists and requeues. The notifier's rules
(what a message is made of, when to retry) are in ``domain.notify``; this is its SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from cascade_cli.errors import Conflict, NotFound
from cascade_cli.store.engine import add_unless_taken
from cascade_cli.store.models import (
    DELIVERY_DEAD,
    DELIVERY_DELIVERED,
    DELIVERY_PENDING,
    Article,
    Delivery,
    Feed,
    MessageTask,
    ScheduleRun,
)


def _affected(result: Any) -> int:
    """Rows changed by an UPDATE (``CursorResult.rowcount``, loosely typed upstream)."""
    return int(getattr(result, "rowcount", 0) or 0)


# --- queueing ------------------------------------------------------------------------------


def run_task(s: Session, run_id: str) -> tuple[ScheduleRun | None, MessageTask | None]:
    """The run and its task (either may be gone)."""
    run = s.get(ScheduleRun, run_id)
    return run, (s.get(MessageTask, run.task_id) if run is not None else None)


def new_article_counts(s: Session, run_id: str) -> dict[str, int]:
    """Feed id -> articles the run stored first (its new articles), for feeds with any."""
    return {str(fid): int(n) for fid, n in s.execute(
        select(Article.feed_id, func.count()).where(Article.schedule_run_id == run_id)
        .group_by(Article.feed_id)).all()}


def queued_keys(s: Session, run_id: str) -> set[str]:
    """Idempotency keys of the run's deliveries already in the outbox."""
    return set(s.scalars(select(Delivery.idempotency_key).where(
        Delivery.schedule_run_id == run_id)))


def run_feed_articles(s: Session, run_id: str, feed_id: str
                      ) -> tuple[Feed | None, list[Article]]:
    """The feed (None if deleted) and the run's new articles of it, in no set order."""
    return s.get(Feed, feed_id), list(s.scalars(select(Article).where(
        Article.schedule_run_id == run_id, Article.feed_id == feed_id)))


def add_delivery(s: Session, row: Delivery) -> bool:
    """Insert a queued row in a savepoint; False when its idempotency key is taken (queued
    concurrently by another process: once is enough)."""
    return add_unless_taken(s, row)


# --- sending -------------------------------------------------------------------------------


def due_ids(s: Session, now: datetime, limit: int) -> list[str]:
    """Pending deliveries due now and not claimed, in the order they should go."""
    return list(s.scalars(select(Delivery.id).where(
        Delivery.status == DELIVERY_PENDING,
        or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
        or_(Delivery.locked_until.is_(None), Delivery.locked_until <= now))
        .order_by(Delivery.next_attempt_at, Delivery.created_at).limit(limit)))


def claim(s: Session, now: datetime, delivery_id: str, lock: datetime
          ) -> tuple[Delivery, MessageTask | None] | None:
    """Lock a due pending delivery until ``lock`` with a conditional UPDATE; the row and its
    task (None if deleted) for the process whose UPDATE changed it, else None."""
    got = _affected(s.execute(update(Delivery).where(
        Delivery.id == delivery_id, Delivery.status == DELIVERY_PENDING,
        or_(Delivery.locked_until.is_(None), Delivery.locked_until <= now))
        .values(locked_until=lock).execution_options(synchronize_session=False)))
    if got != 1:
        return None  # another process claimed it first
    d = s.get(Delivery, delivery_id)
    if d is None:
        return None
    return d, s.get(MessageTask, d.task_id)


def record(s: Session, delivery_id: str, lock: datetime, values: dict[str, Any]) -> bool:
    """Store an attempt's outcome if the sender still holds its claim (``lock``)."""
    return _affected(s.execute(update(Delivery).where(
        Delivery.id == delivery_id, Delivery.status == DELIVERY_PENDING,
        Delivery.locked_until == lock).values(**values).execution_options(
            synchronize_session=False))) == 1


# --- administration (cascade deliveries ...) -----------------------------------------------


def list_deliveries(s: Session, *, status: str | None = None, task_id: str | None = None,
                    limit: int = 50, offset: int = 0) -> tuple[list[Delivery], int]:
    q = select(Delivery)
    if status:
        q = q.where(Delivery.status == status)
    if task_id:
        q = q.where(Delivery.task_id == task_id)
    total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = list(s.scalars(q.order_by(Delivery.created_at.desc(), Delivery.id)
                          .limit(limit).offset(offset)))
    return rows, total


def retry_delivery(s: Session, now: datetime, delivery_id: str) -> Delivery:
    """Put a dead (or pending) delivery back in line now, with a fresh attempt budget."""
    d = s.get(Delivery, delivery_id)
    if d is None:
        raise NotFound("delivery", delivery_id, hint="'cascade deliveries list' shows them")
    if d.status == DELIVERY_DELIVERED:
        raise Conflict(f"delivery {delivery_id} was already delivered", code="already_delivered")
    if not d.body:
        raise Conflict(f"delivery {delivery_id} has no message to send ({d.last_error})",
                       code="not_sendable",
                       hint="fix the task's template or webhook URL; the next run queues "
                            "a new message")
    d.status, d.attempts, d.next_attempt_at, d.locked_until, d.updated_at = (
        DELIVERY_PENDING, 0, now, None, now)
    return d


def retry_dead(s: Session, now: datetime, *, task_id: str | None = None) -> int:
    """Requeue every dead delivery that has a message (optionally of one task)."""
    q = update(Delivery).where(Delivery.status == DELIVERY_DEAD, Delivery.body != "")
    if task_id:
        q = q.where(Delivery.task_id == task_id)
    return _affected(s.execute(q.values(status=DELIVERY_PENDING, attempts=0,
                                        next_attempt_at=now, locked_until=None, updated_at=now)
                               .execution_options(synchronize_session=False)))
