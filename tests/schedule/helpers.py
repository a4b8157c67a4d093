"""Rows for scheduler/notify tests, inserted directly so the tests need no HTTP layer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cascade_cli.store.engine import Store
from cascade_cli.store.models import Feed, MessageTask, new_id


def add_feed(store: Store, now: datetime, feed_id: str = "MP_WXS_1", **kw: Any) -> str:
    with store.session() as s:
        s.add(Feed(id=feed_id, mp_name=kw.pop("mp_name", f"Feed {feed_id}"),
                   url=kw.pop("url", f"https://example.org/{feed_id}.xml"), kind="rss",
                   status=1, created_at=now, updated_at=now, **kw))
    return feed_id


def add_task(store: Store, now: datetime, *, cron: str | None = "* * * * *",
             feeds: list[str] | None = None, **kw: Any) -> str:
    task_id = kw.pop("id", None) or new_id()
    with store.session() as s:
        s.add(MessageTask(id=task_id, name=kw.pop("name", f"task-{task_id[-6:]}"),
                          mps_id=feeds if feeds is not None else ["MP_WXS_1"], cron_exp=cron,
                          status=kw.pop("status", 1), created_at=now, updated_at=now, **kw))
    return task_id
