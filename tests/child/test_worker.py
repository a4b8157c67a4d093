"""The worker against the real parent app on a real socket (in-process), fetching from a local
feed server."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cascade_cli.child.spool import Spool
from cascade_cli.child.worker import ChildWorker
from cascade_cli.client import AsyncParentClient, ParentClient
from cascade_cli.config import Settings
from cascade_cli.demo.server import FeedServer, manifest
from cascade_cli.protocol import UploadAnswer
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


def test_heartbeat_not_starved_by_slow_cpu_heavy_work_and_parent_interval_honoured(
        tmp_path: Path) -> None:
    """The child asks for a 60 s heartbeat, the parent for 1 s; while every fetch is slow (1.5 s
    server delay) and parsing keeps the CPU busy (64 synthetic 20-item documents), heartbeats
    keep coming about every second and renew the 3 s leases: no lease is lost, every allocation
    completes on its first attempt."""
    parent = Parent(tmp_path, lease_ttl=3, heartbeat_interval=1, batch_size=32).start()
    beats: list[float] = []
    heartbeat_pauses: list[float] = []

    async def sleep(seconds: float) -> None:  # the real sleep, recording the heartbeat's
        if asyncio.current_task().get_name() == "heartbeat":  # type: ignore[union-attr]
            heartbeat_pauses.append(seconds)
        await asyncio.sleep(seconds)
    try:
        with FeedServer(synthetic=True, delay=1.5) as srv:
            creds = parent.node("c1", capacity=2)
            settings = child_settings(tmp_path, parent.url, creds, heartbeat_interval=60,
                                      fetch_concurrency=16, per_host_concurrency=16,
                                      fetch_timeout=20)
            task_id = parent.task([{"id": f"S{i}", "url": f"{srv.base_url}/synthetic/{i}.xml",
                                    "mp_name": f"s{i}"} for i in range(64)])
            online(parent, settings)
            parent.dispatch(task_id)
            c = settings.cascade

            class Counting(AsyncParentClient):
                async def _once(self, call: Any) -> Any:
                    if call.route == "/heartbeat" and call.method == "POST":
                        beats.append(time.monotonic())
                    return await super()._once(call)

            async def go() -> ChildWorker:
                async with Counting(c.parent_api_url, c.api_key, c.api_secret,
                                    retries=2, backoff_base=0.05) as client:
                    spool = Spool(settings.spool_path)
                    try:
                        worker = ChildWorker(settings, client, spool, install_signals=False,
                                             burst=True, sleep=sleep)
                        await asyncio.wait_for(worker.run(), 90)
                    finally:
                        spool.close()
                    return worker

            start = time.monotonic()
            worker = asyncio.run(go())
            took = time.monotonic() - start
        allocs = parent.allocations(task_id)
    finally:
        parent.stop()
    assert {a["status"] for a in allocs} == {"completed"}
    assert {a["attempt"] for a in allocs} == {1} and worker.stats.lost == 0
    assert worker.stats.articles == 64 * 20
    assert took > 5  # the work really took several lease periods
    # the parent's 1 s, not the child's 60 s (the interval logic itself runs on a fake clock
    # in test_worker_timing; what only real time shows is below)
    assert len(heartbeat_pauses) >= 3 and set(heartbeat_pauses) == {1.0}, heartbeat_pauses
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    assert max(gaps) < 2.5, gaps  # never starved by the CPU-heavy work: inside the 3 s lease


def test_spool_flushed_first_on_restart_and_interrupted_work_handed_back(
        tmp_path: Path, parent: Parent, feeds: FeedServer,
        caplog: pytest.LogCaptureFixture) -> None:
    """A previous run left one allocation fully spooled (articles + completion) and one only
    started (it died while fetching). The next start delivers the first before claiming, and
    hands the second back at once (released, not left to its lease), then does it itself."""
    creds = parent.node("c1")
    settings = child_settings(tmp_path, parent.url, creds)
    task_id = parent.task(demo_feeds(feeds)[:4])
    c = settings.cascade
    with ParentClient(c.parent_api_url, c.api_key, c.api_secret) as client:
        client.heartbeat()
        parent.dispatch(task_id)
        done, interrupted = client.claim(max=2)
    assert done.allocation_id and interrupted.allocation_id
    spool = Spool(settings.spool_path)
    spool.mark_started(done.allocation_id, done.epoch)
    spool.mark_started(interrupted.allocation_id, interrupted.epoch)
    arts = [{"title": "spooled", "url": f"https://example.com/s/{i}", "feed_id": f.id}
            for i, f in enumerate(done.feeds)]
    spool.add_completion(done.allocation_id, done.task_id, done.epoch,
                         [{"feed_id": f.id, "status": "success", "article_count": 1}
                          for f in done.feeds], len(arts),
                         articles=[(a["feed_id"], Spool.encode_article(a)) for a in arts])
    spool.close()
    caplog.set_level(logging.INFO, logger="cascade")
    worker = run_worker(settings, burst=True)
    allocs = {a["id"]: a for a in parent.allocations(task_id)}
    assert {a["status"] for a in allocs.values()} == {"completed"}
    assert allocs[done.allocation_id]["attempt"] == 1
    assert allocs[done.allocation_id]["article_count"] == len(arts)
    # released (a release is not a failed attempt), then claimed again under a new epoch
    assert allocs[interrupted.allocation_id]["epoch"] > interrupted.epoch
    assert worker.stats.released == 1 and worker.stats.claimed == 1
    text = caplog.text
    assert text.index("flushing first") < text.index("spooled completion delivered")
    assert text.index("spooled completion delivered") < text.index("no work left")


def test_per_host_and_global_fetch_limits(tmp_path: Path, parent: Parent) -> None:
    """child.per_host_concurrency caps one host; other hosts still run; the global cap holds."""
    from cascade_cli.child.fetchers import FetcherRegistry, FetchOutcome, host_key

    class Probe:
        def __init__(self) -> None:
            self.now: dict[str, int] = {}
            self.peak: dict[str, int] = {}
            self.total = self.peak_total = 0

        async def fetch(self, feed: Any, ctx: Any) -> FetchOutcome:
            key = host_key(feed)
            self.now[key] = self.now.get(key, 0) + 1
            self.total += 1
            self.peak[key] = max(self.peak.get(key, 0), self.now[key])
            self.peak_total = max(self.peak_total, self.total)
            await asyncio.sleep(0.15)
            self.now[key] -= 1
            self.total -= 1
            return FetchOutcome()

    creds = parent.node("c1", capacity=4)
    settings = child_settings(tmp_path, parent.url, creds, capacity=4, fetch_concurrency=5,
                              per_host_concurrency=2)
    probe = Probe()
    registry = FetcherRegistry(settings.child, load_plugins=False)
    registry.register("probe", probe)
    task_id = parent.task([{"id": f"P{h}{i}", "url": f"http://{h}.example/{i}.xml",
                            "kind": "probe", "mp_name": "p"}
                           for h in "abc" for i in range(4)])
    online(parent, settings)
    parent.dispatch(task_id)
    run_worker(settings, burst=True, registry=registry)
    assert {a["status"] for a in parent.allocations(task_id)} == {"completed"}
    assert probe.peak == {"a.example": 2, "b.example": 2, "c.example": 2}
    assert probe.peak_total == 5


def test_too_large_upload_is_split_down_to_single_articles(tmp_path: Path) -> None:
    """413 for a batch: smaller batches, and a feed's one-row fragment is split into articles;
    nothing is lost or sent twice."""
    from cascade_cli.config import load_settings
    from cascade_cli.errors import ParentRejected

    sent: list[int] = []

    class Client:
        base_url = "http://parent"

        async def upload_articles_json(self, alloc_id: str, raws: list[bytes], *,
                                       epoch: int | None = None) -> UploadAnswer:
            n = len(json.loads(b"[" + b",".join(raws) + b"]"))
            if n > 7:
                raise ParentRejected("too large", status=413)
            sent.append(n)
            return UploadAnswer(new_count=n)

        async def report_completion(self, *a: Any, **kw: Any) -> None:
            return None

    settings = load_settings(environ={}, cwd=tmp_path, overrides={
        "child": {"spool_path": str(tmp_path / "s.db"), "upload_batch_size": 100}})
    spool = Spool(settings.spool_path)
    arts = [{"title": f"t{i}", "url": f"u{i}"} for i in range(20)]
    spool.add_completion("a1", "t1", 1, [{"feed_id": "F1", "status": "success"}], 20,
                         articles=[("F1", Spool.encode_articles(arts), 20)])
    worker = ChildWorker(settings, Client(), spool, install_signals=False)  # type: ignore[arg-type]
    assert asyncio.run(worker._flush_allocation("a1")) == "completed"
    assert sum(sent) == 20 and max(sent) <= 7 and spool.is_empty()
    spool.close()
