"""Results are delivered from memory; the spool holds only what the parent could not take
(issue 21: the spool's insert, read, commit and delete per allocation were the largest part of
the child's own CPU).

* Through the real path (a real parent on a socket, a local feed server, a ``--burst`` worker):
  every allocation completes and every article arrives, while the spool is never written an
  article or a completion, and ends empty.
* With a scripted parent client (each rule of the delivery loop, now from memory): an outage
  mid-delivery keeps exactly the undelivered rest, with the completion and the new-article
  count so far, and a later flush from the spool sends each article once; a forced stop
  (cancellation) mid-upload keeps everything; 413 splits, 409 drops, and a completed
  delivery leaves no "started" mark behind.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cascade_cli.child.delivery import HeldResults
from cascade_cli.child.spool import Spool
from cascade_cli.child.worker import ChildWorker
from cascade_cli.config import Settings, load_settings
from cascade_cli.demo.server import FeedServer
from cascade_cli.errors import LeaseLost, ParentRejected, ParentUnreachable
from cascade_cli.protocol import UploadAnswer
from tests.child.harness import Parent, child_settings
from tests.child.test_worker import demo_feeds, online, run_worker


@pytest.fixture
def feeds() -> Iterator[FeedServer]:
    with FeedServer() as srv:
        yield srv


def test_real_parent_gets_everything_and_the_spool_is_never_written(
        tmp_path: Path, feeds: FeedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[str] = []
    for name in ("add_completion", "add_encoded"):
        original = getattr(Spool, name)

        def spy(self: Spool, *a: Any, _name: str = name, _orig: Any = original,
                **kw: Any) -> Any:
            writes.append(_name)
            return _orig(self, *a, **kw)
        monkeypatch.setattr(Spool, name, spy)

    parent = Parent(tmp_path).start()
    try:
        creds = parent.node("c1")
        settings = child_settings(tmp_path, parent.url, creds)
        task_id = parent.task(demo_feeds(feeds))
        online(parent, settings)
        created = parent.dispatch(task_id)["allocations_created"]
        worker = run_worker(settings, burst=True)
        allocs = parent.allocations(task_id)
    finally:
        parent.stop()
    assert created >= 2 and len(allocs) == created
    assert {a["status"] for a in allocs} == {"completed"}, allocs
    assert worker.stats.completed == created and worker.stats.articles > 0
    assert worker.stats.new_articles == worker.stats.articles  # a first crawl: all new
    assert writes == []  # no article, no completion ever reached the spool
    spool = Spool(settings.spool_path)
    assert spool.is_empty()  # and no "started" mark was left behind
    spool.close()


class ScriptedClient:
    """The parent client's delivery calls, answering by a script."""

    base_url = "http://parent"

    def __init__(self, fail_upload_at: int | None = None, error: Exception | None = None,
                 max_articles: int | None = None, hang: asyncio.Event | None = None) -> None:
        self.fail_upload_at = fail_upload_at
        self.error = error
        self.max_articles = max_articles
        self.hang = hang
        self.uploads: list[list[dict[str, Any]]] = []
        self.completions: list[tuple[str, int]] = []

    async def upload_articles_json(self, alloc_id: str, raws: list[bytes], *,
                                   epoch: int | None = None) -> UploadAnswer:
        articles = json.loads(b"[" + b",".join(raws) + b"]")
        if self.hang is not None:
            self.hang.set()
            await asyncio.sleep(3600)
        if self.fail_upload_at is not None and len(self.uploads) == self.fail_upload_at:
            assert self.error is not None
            raise self.error
        if self.max_articles is not None and len(articles) > self.max_articles:
            raise ParentRejected("request too large", status=413)
        self.uploads.append(articles)
        return UploadAnswer(received=len(articles), new_count=len(articles))

    async def report_completion(self, alloc_id: str, task_id: str | None,
                                results: list[dict[str, Any]], article_count: int, *,
                                epoch: int | None = None) -> None:
        self.completions.append((alloc_id, article_count))

    async def set_status(self, *a: Any, **kw: Any) -> None:
        return None


def feed_rows(n_feeds: int, per_feed: int) -> list[tuple[str | None, bytes, int]]:
    return [(f"F{f}", Spool.encode_articles(
        [{"title": f"t{f}-{i}", "url": f"https://example.com/{f}/{i}", "feed_id": f"F{f}"}
         for i in range(per_feed)]), per_feed) for f in range(n_feeds)]


def held(spool: Spool, n_feeds: int = 4, per_feed: int = 5) -> HeldResults:
    spool.mark_started("a1", 3)
    results = [{"feed_id": f"F{f}", "status": "success", "article_count": per_feed}
               for f in range(n_feeds)]
    return HeldResults(spool, "a1", "t1", 3, feed_rows(n_feeds, per_feed), results,
                       n_feeds * per_feed)


def settings_for(tmp_path: Path, batch: int) -> Settings:
    return load_settings(environ={}, cwd=tmp_path, overrides={
        "child": {"spool_path": str(tmp_path / "s.db"), "upload_batch_size": batch}})


def test_outage_mid_delivery_keeps_exactly_the_rest_then_the_spool_sends_it_once(
        tmp_path: Path) -> None:
    settings = settings_for(tmp_path, batch=5)  # one feed (5 articles) per upload
    spool = Spool(settings.spool_path)
    down = ScriptedClient(fail_upload_at=2, error=ParentUnreachable(
        "connection refused", reason="refused"))
    worker = ChildWorker(settings, down, spool, install_signals=False)  # type: ignore[arg-type]
    assert asyncio.run(worker._flush_allocation("a1", held(spool))) == "spooled"
    assert [a[0]["feed_id"] for a in down.uploads] == ["F0", "F1"]
    assert down.completions == []
    assert spool.counts() == {"articles": 10, "completions": 1}
    comp = spool.completion("a1")
    assert comp is not None and comp.article_count == 20 and comp.new_count == 10
    assert comp.epoch == 3 and comp.task_id == "t1"
    assert spool.started_count() == 0  # complete in the spool: no longer "started"

    up = ScriptedClient()
    worker = ChildWorker(settings, up, spool, install_signals=False)  # type: ignore[arg-type]
    assert asyncio.run(worker._flush_allocation("a1")) == "completed"
    assert [a[0]["feed_id"] for a in up.uploads] == ["F2", "F3"]
    assert up.completions == [("a1", 20)]
    assert spool.is_empty()
    spool.close()


def test_forced_stop_mid_upload_keeps_everything(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, batch=500)
    spool = Spool(settings.spool_path)

    async def go() -> None:
        hang = asyncio.Event()
        client = ScriptedClient(hang=hang)
        worker = ChildWorker(settings, client, spool,  # type: ignore[arg-type]
                             install_signals=False)
        task = asyncio.create_task(worker._flush_allocation("a1", held(spool)))
        await hang.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert spool.counts() == {"articles": 20, "completions": 1}
    rows = spool.articles("a1", 500)
    assert sum(r.count for r in rows) == 20
    assert {a["feed_id"] for r in rows for a in r.articles} == {"F0", "F1", "F2", "F3"}
    spool.close()


def test_too_large_from_memory_is_split_and_nothing_is_spooled(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, batch=100)
    spool = Spool(settings.spool_path)
    client = ScriptedClient(max_articles=3)
    worker = ChildWorker(settings, client, spool, install_signals=False)  # type: ignore[arg-type]
    assert asyncio.run(worker._flush_allocation("a1", held(spool))) == "completed"
    sizes = [len(u) for u in client.uploads]
    assert sum(sizes) == 20 and max(sizes) <= 3
    titles = [a["title"] for u in client.uploads for a in u]
    assert len(set(titles)) == 20  # each article once, none lost in the splitting
    assert client.completions == [("a1", 20)]
    assert spool.is_empty()
    spool.close()


def test_lease_lost_mid_delivery_drops_it_and_leaves_nothing(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, batch=5)
    spool = Spool(settings.spool_path)
    client = ScriptedClient(fail_upload_at=1, error=LeaseLost("allocation handed on"))
    worker = ChildWorker(settings, client, spool, install_signals=False)  # type: ignore[arg-type]
    assert asyncio.run(worker._flush_allocation("a1", held(spool))) == "lost"
    assert client.completions == [] and worker.stats.lost == 1
    assert spool.is_empty()
    spool.close()
