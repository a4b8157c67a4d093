"""What happened, for operators: runs with their outcome, one run in full, the event log.

Read-only queries behind ``cascade runs``, ``cascade runs show`` and ``cascade events``.
Nothing here is on the node request path; a listing costs a few grouped queries over the
page's runs, not one per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cascade_cli.clock import isoformat_z
from cascade_cli.errors import InvalidInput, NotFound
from cascade_cli.store.allocations import allocation_dict
from cascade_cli.store.events import event_dict
from cascade_cli.store.idmatch import match_short_id
from cascade_cli.store.models import (
    Allocation,
    Delivery,
    Event,
    FeedResult,
    MessageTask,
    Node,
    ScheduleRun,
)
from cascade_cli.store.nodes import find_node_id


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    total: int


def resolve_task_id(s: Session, ident: str) -> str:
    """A task's id from its id or name. A task deleted since keeps its runs and allocations
    (with ``task_name``): its id is found through them."""
    if s.get(MessageTask, ident) is not None:
        return ident
    ids = list(s.scalars(select(MessageTask.id).where(MessageTask.name == ident)))
    if len(ids) > 1:
        raise InvalidInput(f"several tasks are named {ident!r}; use the task id", field="task")
    if ids:
        return ids[0]
    gone = s.scalar(select(Allocation.task_id).where(Allocation.task_name == ident).limit(1))
    if gone is not None:
        return gone
    if s.scalar(select(ScheduleRun.id).where(ScheduleRun.task_id == ident).limit(1)):
        return ident
    found = match_short_id(s, MessageTask.id, ident, "task")
    if found is not None:
        return found
    raise NotFound("message task", ident, hint="'cascade tasks list' shows the tasks")


def resolve_node_id(s: Session, ident: str) -> str:
    """A node's id from its id or name (a deleted node's id is taken as it is)."""
    return find_node_id(s, ident) or match_short_id(s, Node.id, ident, "node") or ident


def resolve_delivery_task_id(s: Session, ident: str) -> str:
    """A task's id from its id or name, for filtering deliveries: a task deleted since keeps
    its deliveries, listed by its id."""
    task_id = s.scalar(select(MessageTask.id).where(MessageTask.id == ident)) or s.scalar(
        select(MessageTask.id).where(MessageTask.name == ident).limit(1))
    if task_id is not None:
        return str(task_id)
    if s.scalar(select(Delivery.id).where(Delivery.task_id == ident).limit(1)):
        return ident
    raise NotFound("message task", ident, hint="'cascade tasks list' shows the tasks")


def _resolve(s: Session, column: Any, ident: str, what: str, hint: str) -> str:
    """An id from the id itself, or a unique end or start of it (tables show the last 8
    characters of generated ids)."""
    if s.scalar(select(column).where(column == ident)) is not None:
        return ident
    found = match_short_id(s, column, ident, what, min_len=4, prefix=True)
    if found is None:
        raise NotFound(what, ident, hint=hint)
    return found


def resolve_run_id(s: Session, ident: str) -> str:
    return _resolve(s, ScheduleRun.id, ident, "run", "'cascade runs' lists the runs")


def resolve_delivery_id(s: Session, ident: str) -> str:
    return _resolve(s, Delivery.id, ident, "delivery",
                    "'cascade deliveries list' lists the deliveries")


def _outcomes(s: Session, run_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per run: allocations by status, feeds failed, articles new, deliveries by status."""
    out: dict[str, dict[str, Any]] = {
        rid: {"allocations_by_status": {}, "failed_feeds": 0, "feeds_reported": 0,
              "new_articles": 0, "deliveries": {}} for rid in run_ids}
    if not run_ids:
        return out
    for rid, status, n, new in s.execute(
            select(Allocation.schedule_run_id, Allocation.status, func.count(),
                   func.coalesce(func.sum(Allocation.new_article_count), 0))
            .where(Allocation.schedule_run_id.in_(run_ids))
            .group_by(Allocation.schedule_run_id, Allocation.status)):
        out[rid]["allocations_by_status"][status] = int(n)
        out[rid]["new_articles"] += int(new or 0)
    for frid, status, n in s.execute(
            select(FeedResult.schedule_run_id, FeedResult.status, func.count())
            .where(FeedResult.schedule_run_id.in_(run_ids))
            .group_by(FeedResult.schedule_run_id, FeedResult.status)):
        if frid in out:
            out[frid]["feeds_reported"] += int(n)
            if status == "failed":
                out[frid]["failed_feeds"] += int(n)
    for drid, status, n in s.execute(
            select(Delivery.schedule_run_id, Delivery.status, func.count())
            .where(Delivery.schedule_run_id.in_(run_ids))
            .group_by(Delivery.schedule_run_id, Delivery.status)):
        if drid in out:
            out[drid]["deliveries"][status] = int(n)
    return out


def _run_dict(run: ScheduleRun, task_name: str | None, outcome: dict[str, Any]
              ) -> dict[str, Any]:
    return {"id": run.id, "task_id": run.task_id, "task_name": task_name,
            "trigger": run.trigger, "status": run.status,
            "scheduled_for": isoformat_z(run.scheduled_for),
            "created_at": isoformat_z(run.created_at),
            "finished_at": isoformat_z(run.finished_at),
            "notified_at": isoformat_z(run.notified_at),
            "allocations": run.allocation_count, **outcome}


def _task_names(s: Session, runs: list[ScheduleRun]) -> dict[str, str]:
    ids = list({r.task_id for r in runs})
    names = dict(s.execute(select(MessageTask.id, MessageTask.name)
                           .where(MessageTask.id.in_(ids))).all()) if ids else {}
    missing = [i for i in ids if i not in names]
    if missing:  # deleted tasks: the name their allocations kept
        names.update(dict(s.execute(select(Allocation.task_id, func.max(Allocation.task_name))
                                    .where(Allocation.task_id.in_(missing))
                                    .group_by(Allocation.task_id)).all()))
    return {str(k): str(v) for k, v in names.items()}


def list_runs(s: Session, *, task_id: str | None = None, limit: int = 50,
              offset: int = 0) -> Page:
    """Runs, newest first, each with its outcome."""
    q = select(ScheduleRun)
    count = select(func.count()).select_from(ScheduleRun)
    if task_id:
        q = q.where(ScheduleRun.task_id == task_id)
        count = count.where(ScheduleRun.task_id == task_id)
    runs = list(s.scalars(q.order_by(ScheduleRun.created_at.desc(), ScheduleRun.id.desc())
                          .limit(limit).offset(offset)))
    outcomes = _outcomes(s, [r.id for r in runs])
    names = _task_names(s, runs)
    return Page([_run_dict(r, names.get(r.task_id), outcomes[r.id]) for r in runs],
                int(s.scalar(count) or 0))


def run_detail(s: Session, run_id: str) -> dict[str, Any]:
    """One run in full: its outcome, allocations, per-feed results with their errors,
    deliveries and the events that name it."""
    run = s.get(ScheduleRun, run_id)
    if run is None:
        raise NotFound("run", run_id, hint="'cascade runs' lists the runs")
    data = _run_dict(run, _task_names(s, [run]).get(run.task_id), _outcomes(s, [run.id])[run.id])
    data["allocation_list"] = [
        allocation_dict(a, name) for a, name in s.execute(
            select(Allocation, Node.name).outerjoin(Node, Node.id == Allocation.node_id)
            .where(Allocation.schedule_run_id == run.id)
            .order_by(Allocation.created_at, Allocation.id))]
    node_names = dict(s.execute(select(Node.id, Node.name)).all())
    data["feed_results"] = [
        {"allocation_id": r.allocation_id, "feed_id": r.feed_id, "node_id": r.node_id,
         "node_name": node_names.get(r.node_id) if r.node_id else None,
         "status": r.status, "article_count": r.article_count,
         "new_article_count": r.new_article_count, "error": r.error,
         "duration_ms": r.duration_ms, "created_at": isoformat_z(r.created_at)}
        for r in s.scalars(select(FeedResult).where(FeedResult.schedule_run_id == run.id)
                           .order_by(FeedResult.status, FeedResult.feed_id))]
    data["delivery_list"] = [
        {"id": d.id, "feed_id": d.feed_id, "channel": d.channel, "status": d.status,
         "attempts": d.attempts, "max_attempts": d.max_attempts,
         "last_status_code": d.last_status_code, "last_error": d.last_error,
         "next_attempt_at": isoformat_z(d.next_attempt_at),
         "delivered_at": isoformat_z(d.delivered_at)}
        for d in s.scalars(select(Delivery).where(Delivery.schedule_run_id == run.id)
                           .order_by(Delivery.created_at, Delivery.id))]
    return data


def list_events(s: Session, *, node_id: str | None = None, after_id: int | None = None,
                limit: int = 50) -> Page:
    """Events newest first; with ``after_id``, only newer ones, oldest first (for
    ``--follow``). Each carries the node's and the task's name (None once deleted)."""
    q = (select(Event, Node.name, MessageTask.name)
         .outerjoin(Node, Node.id == Event.node_id)
         .outerjoin(MessageTask, MessageTask.id == Event.task_id))
    count = select(func.count()).select_from(Event)
    if node_id:
        q = q.where(Event.node_id == node_id)
        count = count.where(Event.node_id == node_id)
    if after_id is not None:
        q = q.where(Event.id > after_id).order_by(Event.id)
    else:
        q = q.order_by(Event.id.desc())
    items = [{**event_dict(e), "node_name": node_name, "task_name": task_name}
             for e, node_name, task_name in s.execute(q.limit(limit))]
    total = len(items) if after_id is not None else int(s.scalar(count) or 0)
    return Page(items, total)
