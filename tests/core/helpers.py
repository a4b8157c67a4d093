"""Builders for core-service tests: nodes, feeds, tasks in one call."""

from __future__ import annotations

from datetime import datetime

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
