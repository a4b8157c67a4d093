"""The worker against the real parent app on a real socket (in-process), fetching from a local
feed server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cascade_cli.child.spool import Spool
from cascade_cli.child.worker import ChildWorker
from cascade_cli.client import AsyncParentClient, ParentClient
from cascade_cli.config import Settings
from cascade_cli.demo.server import FeedServer, manifest
from tests.child.harness import Parent, child_settings


@pytest.fixture
def feeds() -> Iterator[FeedServer]:
    with FeedServer() as srv:
        yield srv


@pytest.fixture
def parent(tmp_path: Path) -> Iterator[Parent]:
    p = Parent(tmp_path).start()
    yield p
    p.stop()


def demo_feeds(srv: FeedServer, extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    out = [{"id": m["id"], "url": srv.url_for(m["file"]), "kind": m["kind"],
            "mp_name": m["mp_name"]} for m in manifest()]
    return out + (extra or [])


def run_worker(settings: Settings, **kw: Any) -> ChildWorker:
    c = settings.cascade

    async def go() -> ChildWorker:
        async with AsyncParentClient(c.parent_api_url, c.api_key, c.api_secret,
                                     retries=2, backoff_base=0.05) as client:
            spool = Spool(settings.spool_path)
            try:
                worker = ChildWorker(settings, client, spool, install_signals=False, **kw)
                await asyncio.wait_for(worker.run(), 60)
            finally:
                spool.close()
            return worker

    return asyncio.run(go())


def online(parent: Parent, settings: Settings) -> None:
    c = settings.cascade
    with ParentClient(c.parent_api_url, c.api_key, c.api_secret) as client:
        client.heartbeat()


def test_burst_fetches_everything_and_reports_per_feed(
        tmp_path: Path, parent: Parent, feeds: FeedServer,
        caplog: pytest.LogCaptureFixture) -> None:
    creds = parent.node("c1")
    settings = child_settings(tmp_path, parent.url, creds)
    bad = [{"id": "BAD_HTML", "url": feeds.base_url + "/nope.xml", "mp_name": "broken"}]
    task_id = parent.task(demo_feeds(feeds, bad))
    online(parent, settings)
    result = parent.dispatch(task_id)
    assert result["allocations_created"] >= 5
    caplog.set_level(logging.INFO, logger="cascade")
    worker = run_worker(settings, burst=True)
    allocs = parent.allocations(task_id)
    assert {a["status"] for a in allocs} == {"completed"}, allocs
    total = sum(a["article_count"] for a in allocs)
    assert total == 61 and worker.stats.feeds_failed == 1 and worker.stats.feeds_ok == 10
    assert parent.article_count() == (61, 61)
    spool = Spool(settings.spool_path)
    assert spool.is_empty()
    spool.close()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("allocation ")]
    assert len(lines) == len(allocs) and any("1 failed" in line for line in lines)
    assert creds.api_secret not in caplog.text


def test_max_allocations_and_second_run_not_modified(
        tmp_path: Path, parent: Parent, feeds: FeedServer) -> None:
    creds = parent.node("c1")
    settings = child_settings(tmp_path, parent.url, creds)
    task_id = parent.task(demo_feeds(feeds))
    online(parent, settings)
    parent.dispatch(task_id)
    worker = run_worker(settings, max_allocations=2)
    assert worker.stats.claimed == 2
    statuses = [a["status"] for a in parent.allocations(task_id)]
    assert statuses.count("completed") == 2 and statuses.count("pending") == 3
    run_worker(settings, burst=True)
    # The parent stored the ETags: a second run is conditional and gets 304s.
    parent.dispatch(task_id)
    worker = run_worker(settings, burst=True)
    assert worker.stats.feeds_ok == 10 and worker.stats.articles == 0
    assert parent.article_count() == (61, 61)
