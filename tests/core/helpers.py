"""Builders for core-service tests: nodes, feeds, tasks in one call."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from cascade_cli.protocol import FeedIn, MessageTaskIn
from cascade_cli.store import feeds as feed_repo
from cascade_cli.store import nodes as node_repo
from cascade_cli.store import tasks as task_repo
from cascade_cli.store.engine import Store
from cascade_cli.store.models import Node


def make_node(store: Store, now: datetime, name: str, capacity: int = 2,
              online: bool = True) -> Node:
    with store.session() as s:
        node, _ = node_repo.create_node(s, now, name, max_capacity=capacity)
        if online:
            node.last_heartbeat_at = now
    return node


def make_feeds(store: Store, now: datetime, n: int, prefix: str = "MP_WXS_",
               preferred: str | None = None) -> list[str]:
    ids = []
    with store.session() as s:
        for i in range(n):
            f = feed_repo.create_feed(s, now, FeedIn(id=f"{prefix}{i}", mp_name=f"feed {i}",
                                                     url=f"http://127.0.0.1:9/{prefix}{i}.xml",
                                                     preferred_node=preferred))
            ids.append(f.id)
    return ids


def make_task(store: Store, now: datetime, feed_ids: list[str], name: str = "news",
              **kw: object) -> str:
    with store.session() as s:
        t = task_repo.create_task(s, now, MessageTaskIn(name=name, mps_id=feed_ids, **kw))
        return t.id


def claimed_run(store: Store, now: datetime, settings: Any, n_feeds: int, name: str = "news",
                node_name: str = "child-a", prefix: str = "MP_WXS_",
                **task_kw: Any) -> tuple[Node, str, list[tuple[str, int, str]]]:
    """A task of ``n_feeds`` feeds dispatched (one allocation per feed) and all of it claimed
    by one node: the node, the run id, and (allocation id, epoch, feed id) per allocation."""
    from cascade_cli.domain.dispatch import dispatch
    from cascade_cli.store import allocations as alloc_repo

    node = make_node(store, now, node_name, capacity=n_feeds)
    task_id = make_task(store, now, make_feeds(store, now, n_feeds, prefix=prefix), name=name,
                        **task_kw)
    with store.session() as s:
        run_id = dispatch(s, now, settings, task_id=task_id).runs[0].schedule_run_id
    with store.session() as s:
        claimed = alloc_repo.claim(s, now, s.merge(node), settings, max_count=n_feeds)
    assert len(claimed) == n_feeds
    return node, run_id, [(a.id, a.epoch, a.feed_ids[0]) for a in claimed]


def complete_one(s: Session, now: datetime, node: Node, settings: Any,
                 alloc: tuple[str, int, str]) -> Any:
    """Report one claimed allocation (from ``claimed_run``) completed, in session ``s``."""
    from cascade_cli.protocol import FeedResultIn, ReportCompletionIn
    from cascade_cli.store import allocations as alloc_repo

    alloc_id, epoch, feed = alloc
    return alloc_repo.report_completion(s, now, s.merge(node), ReportCompletionIn(
        allocation_id=alloc_id, epoch=epoch,
        results=[FeedResultIn(feed_id=feed, status="success")]), settings)


def run_state(store: Store, run_id: str) -> tuple[str, int, int]:
    """(status, open_allocations, run_finished events of this run)."""
    from sqlalchemy import select

    from cascade_cli.store.models import Event, ScheduleRun

    with store.session() as s:
        run = s.get(ScheduleRun, run_id)
        assert run is not None
        events = s.scalars(select(Event.detail).where(Event.operation == "run_finished")).all()
        finished = sum(1 for d in events if (d or {}).get("schedule_run_id") == run_id)
        return run.status, run.open_allocations, finished
