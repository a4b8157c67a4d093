"""Read-only queries behind the web dashboard (``cascade_cli.web.ui``).

Each function answers one view with typed rows (frozen dataclasses), so the UI package renders
values and never builds SQL. Every listing is bounded (``limit``): the page is polled every few
seconds while an operator leaves it open, so no query may grow with the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from cascade_cli.store import nodes as node_repo
from cascade_cli.store.models import (
    DELIVERY_DEAD,
    DELIVERY_PENDING,
    Allocation,
    Delivery,
    Feed,
    FeedResult,
    MessageTask,
    Node,
    ScheduleRun,
    is_active,
)

FEED_FAILED = "failed"


@dataclass(frozen=True)
class NodeLine:
    id: str
    name: str
    status: str  # online | offline | never seen | disabled | revoked (nodes.node_status)
    enabled: bool
    running: int
    capacity: int
    last_heartbeat_at: datetime | None
    hostname: str | None
    version: str | None
    credentials_rotated_at: datetime | None


@dataclass(frozen=True)
class Overview:
    nodes: list[NodeLine]
    online: int
    offline: int
    runs_24h: dict[str, int]  # run status -> count, runs created in the last 24 hours
    allocations: dict[str, int]  # allocation status -> count (every allocation)
    failed_feeds: int  # feeds whose last fetch failed
    webhook_pending: int
    webhook_dead: int


@dataclass(frozen=True)
class RunLine:
    id: str
    task_id: str
    task_name: str
    trigger: str
    status: str
    scheduled_for: datetime
    created_at: datetime
    finished_at: datetime | None
    allocation_count: int
    open_allocations: int


@dataclass(frozen=True)
class AllocationLine:
    id: str
    node_name: str | None
    status: str
    attempt: int
    max_attempts: int
    feeds: int
    article_count: int
    new_article_count: int
    error: str | None
    claimed_at: datetime | None
    completed_at: datetime | None


@dataclass(frozen=True)
class FeedResultLine:
    feed_id: str
    node_name: str | None
    status: str
    article_count: int
    new_article_count: int
    error: str | None
    duration_ms: int | None
    created_at: datetime


@dataclass(frozen=True)
class DeliveryLine:
    id: str
    feed_id: str | None
    channel: str
    status: str
    attempts: int
    max_attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None


@dataclass(frozen=True)
class RunDetail:
    run: RunLine
    allocations: list[AllocationLine]
    results: list[FeedResultLine]
    deliveries: list[DeliveryLine]


@dataclass(frozen=True)
class FeedLine:
    id: str
    name: str
    enabled: bool
    url: str
    last_fetched_at: datetime | None
    last_status: str | None
    last_error: str | None
    failure_streak: int  # failed results since the last one that was not a failure


@dataclass(frozen=True)
class TaskLine:
    id: str
    name: str
    enabled: bool
    cron_exp: str | None
    feeds: int
    last_error: str | None
    last_run_status: str | None
    last_run_at: datetime | None


def running_by_node(session: Session) -> dict[str, int]:
    """Allocations each node holds now (claimed or executing)."""
    rows = session.execute(select(Allocation.node_id, func.count())
                           .where(is_active(Allocation.status)).group_by(Allocation.node_id))
    return {str(node): int(n) for node, n in rows if node}


def node_lines(session: Session, now: datetime, offline_after: float) -> list[NodeLine]:
    running = running_by_node(session)
    return [NodeLine(id=n.id, name=n.name, status=node_repo.node_status(n, now, offline_after),
                     enabled=n.enabled, running=running.get(n.id, 0), capacity=n.max_capacity,
                     last_heartbeat_at=n.last_heartbeat_at, hostname=n.hostname,
                     version=n.version, credentials_rotated_at=n.credentials_rotated_at)
            for n in node_repo.list_nodes(session)]


def overview(session: Session, now: datetime, offline_after: float) -> Overview:
    nodes = node_lines(session, now, offline_after)
    runs = dict(session.execute(select(ScheduleRun.status, func.count())
                                .where(ScheduleRun.created_at >= now - timedelta(hours=24))
                                .group_by(ScheduleRun.status)).all())
    allocs = dict(session.execute(select(Allocation.status, func.count())
                                  .group_by(Allocation.status)).all())
    failed = session.scalar(select(func.count()).select_from(Feed)
                            .where(Feed.last_status == FEED_FAILED)) or 0
    backlog = dict(session.execute(select(Delivery.status, func.count())
                                   .where(Delivery.status.in_([DELIVERY_PENDING, DELIVERY_DEAD]))
                                   .group_by(Delivery.status)).all())
    return Overview(nodes=nodes,
                    online=sum(1 for n in nodes if n.status == "online"),
                    offline=sum(1 for n in nodes if n.status != "online"),
                    runs_24h={str(k): int(v) for k, v in runs.items()},
                    allocations={str(k): int(v) for k, v in allocs.items()},
                    failed_feeds=int(failed),
                    webhook_pending=int(backlog.get(DELIVERY_PENDING, 0)),
                    webhook_dead=int(backlog.get(DELIVERY_DEAD, 0)))


def _run_line(run: ScheduleRun, task_name: str | None) -> RunLine:
    return RunLine(id=run.id, task_id=run.task_id, task_name=task_name or run.task_id,
                   trigger=run.trigger, status=run.status, scheduled_for=run.scheduled_for,
                   created_at=run.created_at, finished_at=run.finished_at,
                   allocation_count=run.allocation_count,
                   open_allocations=run.open_allocations)


def recent_runs(session: Session, *, limit: int = 50) -> list[RunLine]:
    rows = session.execute(select(ScheduleRun, MessageTask.name)
                           .outerjoin(MessageTask, MessageTask.id == ScheduleRun.task_id)
                           .order_by(ScheduleRun.created_at.desc(), ScheduleRun.id.desc())
                           .limit(limit))
    return [_run_line(run, name) for run, name in rows]


def run_detail(session: Session, run_id: str, *, limit: int = 500) -> RunDetail | None:
    row = session.execute(select(ScheduleRun, MessageTask.name)
                          .outerjoin(MessageTask, MessageTask.id == ScheduleRun.task_id)
                          .where(ScheduleRun.id == run_id)).first()
    if row is None:
        return None
    run, task_name = row
    names = dict(session.execute(select(Node.id, Node.name)).all())
    allocs = session.scalars(select(Allocation).where(Allocation.schedule_run_id == run_id)
                             .order_by(Allocation.created_at, Allocation.id).limit(limit))
    results = session.scalars(select(FeedResult).where(FeedResult.schedule_run_id == run_id)
                              .order_by(FeedResult.id).limit(limit))
    deliveries = session.scalars(select(Delivery).where(Delivery.schedule_run_id == run_id)
                                 .order_by(Delivery.created_at, Delivery.id).limit(limit))
    return RunDetail(
        run=_run_line(run, task_name),
        allocations=[AllocationLine(
            id=a.id, node_name=names.get(a.node_id) if a.node_id else None, status=a.status,
            attempt=a.attempt, max_attempts=a.max_attempts, feeds=len(a.feed_ids or []),
            article_count=a.article_count, new_article_count=a.new_article_count,
            error=a.error_message, claimed_at=a.claimed_at, completed_at=a.completed_at)
            for a in allocs],
        results=[FeedResultLine(
            feed_id=r.feed_id, node_name=names.get(r.node_id) if r.node_id else None,
            status=r.status, article_count=r.article_count,
            new_article_count=r.new_article_count, error=r.error, duration_ms=r.duration_ms,
            created_at=r.created_at) for r in results],
        deliveries=[DeliveryLine(
            id=d.id, feed_id=d.feed_id, channel=d.channel, status=d.status,
            attempts=d.attempts, max_attempts=d.max_attempts,
            last_status_code=d.last_status_code, last_error=d.last_error,
            next_attempt_at=d.next_attempt_at, delivered_at=d.delivered_at)
            for d in deliveries])


def failure_streaks(session: Session, feed_ids: list[str]) -> dict[str, int]:
    """Per feed: failed results after its latest result that was not a failure (all of its
    results when none succeeded). Feeds without failures are left out."""
    if not feed_ids:
        return {}
    last_ok = (select(FeedResult.feed_id, func.max(FeedResult.id).label("ok_id"))
               .where(FeedResult.feed_id.in_(feed_ids), FeedResult.status != FEED_FAILED)
               .group_by(FeedResult.feed_id).subquery())
    rows = session.execute(
        select(FeedResult.feed_id, func.count())
        .outerjoin(last_ok, last_ok.c.feed_id == FeedResult.feed_id)
        .where(FeedResult.feed_id.in_(feed_ids), FeedResult.status == FEED_FAILED,
               FeedResult.id > func.coalesce(last_ok.c.ok_id, 0))
        .group_by(FeedResult.feed_id))
    return {str(f): int(n) for f, n in rows}


def feed_lines(session: Session, *, limit: int = 200, offset: int = 0) -> tuple[list[FeedLine],
                                                                                 int]:
    """Feeds, the failing ones first (longest streak first), then by id."""
    total = int(session.scalar(select(func.count()).select_from(Feed)) or 0)
    # A CASE, not the comparison itself: PostgreSQL sorts NULL (never fetched) first in DESC.
    failing_first = case((Feed.last_status == FEED_FAILED, 0), else_=1)
    feeds = list(session.scalars(select(Feed).order_by(failing_first, Feed.id)
                                 .limit(limit).offset(offset)))
    streaks = failure_streaks(session, [f.id for f in feeds])
    lines = [FeedLine(id=f.id, name=f.mp_name, enabled=f.status == 1, url=f.url,
                      last_fetched_at=f.last_fetched_at, last_status=f.last_status,
                      last_error=f.last_error, failure_streak=streaks.get(f.id, 0))
             for f in feeds]
    lines.sort(key=lambda f: -f.failure_streak)  # stable: ties keep the query's order
    return lines, total


def task_lines(session: Session) -> list[TaskLine]:
    """Every task with its latest run (one grouped query for the runs)."""
    tasks = list(session.scalars(select(MessageTask).order_by(MessageTask.name)))
    latest = (select(ScheduleRun.task_id, func.max(ScheduleRun.created_at).label("at"))
              .group_by(ScheduleRun.task_id).subquery())
    last: dict[str, tuple[str, datetime]] = {}
    for task_id, status, at in session.execute(
            select(ScheduleRun.task_id, ScheduleRun.status, ScheduleRun.created_at)
            .join(latest, (latest.c.task_id == ScheduleRun.task_id)
                  & (latest.c.at == ScheduleRun.created_at))):
        last[str(task_id)] = (str(status), at)
    return [TaskLine(id=t.id, name=t.name, enabled=t.status == 1, cron_exp=t.cron_exp,
                     feeds=len(t.mps_id or []), last_error=t.last_error,
                     last_run_status=last.get(t.id, (None, None))[0],
                     last_run_at=last.get(t.id, (None, None))[1])
            for t in tasks]


def task_by_id(session: Session, task_id: str) -> MessageTask | None:
    return session.get(MessageTask, task_id)
