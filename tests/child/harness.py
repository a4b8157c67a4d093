"""The real parent (store + create_app under uvicorn) in this process, with helpers to set up
nodes, feeds and tasks and to read results straight from the database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from cascade_cli.auth import NodeCredentials
from cascade_cli.clock import SystemClock
from cascade_cli.config import Settings, load_settings
from cascade_cli.domain.dispatch import dispatch
from cascade_cli.protocol import FeedIn, MessageTaskIn
from cascade_cli.store import allocations as alloc_store
from cascade_cli.store import migrate
from cascade_cli.store import nodes as node_store
from cascade_cli.store.engine import Store
from cascade_cli.store.feeds import create_feed
from cascade_cli.store.models import Article
from cascade_cli.store.tasks import create_task
from cascade_cli.web.app import create_app
from tests.child.servers import UvicornThread

CHILD_DEFAULTS = {"claim_wait": 1, "fetch_timeout": 3, "drain_timeout": 5}


def child_settings(tmp_path: Path, parent_url: str, creds: NodeCredentials, name: str = "c1",
                   heartbeat_interval: float = 1, **child: Any) -> Settings:
    cfg = dict(CHILD_DEFAULTS)
    cfg.update(child)
    cfg["spool_path"] = str(tmp_path / f"spool-{name}.db")
    return load_settings(environ={}, cwd=tmp_path, overrides={
        "data_dir": str(tmp_path / f"data-{name}"),
        "cascade": {"enabled": True, "node_type": "child", "parent_api_url": parent_url,
                    "api_key": creds.api_key, "api_secret": creds.api_secret,
                    "heartbeat_interval": heartbeat_interval},
        "child": cfg})


class Parent:
    def __init__(self, tmp_path: Path, **parent: Any) -> None:
        self.tmp_path = tmp_path
        self.clock = SystemClock()
        self.settings = load_settings(environ={}, cwd=tmp_path, overrides={
            "data_dir": str(tmp_path / "parent"),
            "parent": {"batch_size": 2, "lease_ttl": 30, **parent}})
        self.store = Store.from_url(f"sqlite:///{tmp_path / 'parent.db'}")
        migrate.upgrade(self.store)
        self.server: UvicornThread | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def start(self) -> Parent:
        app = create_app(self.store, self.clock, self.settings, admin_secret=b"x" * 32)
        self.server = UvicornThread(app).__enter__()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.__exit__()
        self.store.dispose()

    def node(self, name: str, capacity: int = 2) -> NodeCredentials:
        with self.store.session() as s:
            _, creds = node_store.create_node(s, self.clock.now(), name, max_capacity=capacity)
        return creds

    def task(self, feeds: list[dict[str, Any]], name: str = "t1") -> str:
        with self.store.session() as s:
            for f in feeds:
                create_feed(s, self.clock.now(), FeedIn(**f))
            task = create_task(s, self.clock.now(), MessageTaskIn(
                name=name, mps_id=[f["id"] for f in feeds]))
            return task.id

    def dispatch(self, task_id: str) -> dict[str, Any]:
        with self.store.session() as s:
            return dispatch(s, self.clock.now(), self.settings, task_id=task_id).to_dict()

    def allocations(self, task_id: str | None = None) -> list[dict[str, Any]]:
        with self.store.session() as s:
            rows, _ = alloc_store.list_allocations(s, task_id=task_id, limit=200)
        return rows

    def article_count(self) -> tuple[int, int]:
        """(rows, distinct (feed, guid))."""
        with self.store.session() as s:
            rows = s.scalar(select(func.count()).select_from(Article)) or 0
            distinct = s.scalar(select(func.count()).select_from(
                select(Article.feed_id, Article.guid).distinct().subquery())) or 0
        return int(rows), int(distinct)
