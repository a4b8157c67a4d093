"""The worker's timing logic on a fake clock: heartbeat interval, claim backoff, retry pauses,
the drain deadline and the second stop request. ``ChildWorker`` takes ``clock=`` and
``sleep=``; nothing here waits on the wall clock (a drain timeout of ten minutes passes at
once)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cascade_cli.child.fetchers import FetcherRegistry, FetchOutcome
from cascade_cli.child.spool import Spool
from cascade_cli.child.worker import MAX_BACKOFF, ChildWorker, Held
from cascade_cli.config import Settings, load_settings
from cascade_cli.errors import ParentUnreachable
from cascade_cli.protocol import (
    AllocationAnswer,
    HeartbeatAnswer,
    PackageFeed,
    TaskPackage,
    UploadAnswer,
)


class FakeTime:
    """Virtual time: ``sleep`` registers a wake-up, and ``drive`` (a task) moves the clock to
    the earliest one whenever every other task is waiting, so sleeps end in order and at
    exactly their time, however long they are."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.ends: list[float] = []  # the times at which sleeps ended, in order
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> asyncio.Future[None]:
        """Registered at the call (a plain function returning an awaitable)."""
        self.sleeps.append(seconds)
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (self.now + seconds, next(self._seq), fut))
        return fut

    async def drive(self) -> None:
        while True:
            for _ in range(20):  # let every runnable task run until it waits
                await asyncio.sleep(0)
            while self._waiting and self._waiting[0][2].done():  # cancelled sleeps
                heapq.heappop(self._waiting)
            if self._waiting:
                wake, _, fut = heapq.heappop(self._waiting)
                self.now = max(self.now, wake)
                self.ends.append(wake)
                fut.set_result(None)


class FakeParent:
    """The client surface the worker uses, answering with the protocol's models."""

    base_url = "http://parent.invalid"

    def __init__(self, heartbeat: HeartbeatAnswer | None = None,
                 packages: list[TaskPackage] | None = None,
                 claim_error: Exception | None = None) -> None:
        self.heartbeat_answer = heartbeat or HeartbeatAnswer()
        self.packages = list(packages or [])
        self.claim_error = claim_error
        self.claims = 0
        self.statuses: list[tuple[str, str]] = []

    async def heartbeat(self, **kw: Any) -> HeartbeatAnswer:
        return self.heartbeat_answer

    async def claim(self, wait: float = 0, max: int = 1) -> list[TaskPackage]:  # noqa: A002
        self.claims += 1
        if self.claim_error is not None:
            raise self.claim_error
        if self.packages:
            out, self.packages = self.packages, []
            return out
        await asyncio.Event().wait()  # a long poll that finds nothing
        return []

    async def set_status(self, alloc_id: str, status: str, **kw: Any) -> AllocationAnswer:
        self.statuses.append((alloc_id, status))
        return AllocationAnswer(allocation_id=alloc_id, status=status)

    async def upload_articles_json(self, *a: Any, **kw: Any) -> UploadAnswer:
        return UploadAnswer()

    async def report_completion(self, alloc_id: str, *a: Any, **kw: Any) -> AllocationAnswer:
        return AllocationAnswer(allocation_id=alloc_id, status="completed")


def settings_for(tmp_path: Path, **child: Any) -> Settings:
    return load_settings(environ={}, cwd=tmp_path, overrides={
        "data_dir": str(tmp_path / "data"),
        "cascade": {"heartbeat_interval": 60},
        "child": {"spool_path": str(tmp_path / "spool.db"), **child}})


def worker_for(tmp_path: Path, parent: FakeParent, t: FakeTime, **kw: Any) -> ChildWorker:
    settings = settings_for(tmp_path, **kw.pop("child", {}))
    return ChildWorker(settings, parent, Spool(settings.spool_path),  # type: ignore[arg-type]
                       install_signals=False, clock=t.clock, sleep=t.sleep, **kw)


async def until(check: Callable[[], bool]) -> None:
    for _ in range(100_000):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never reached")


@pytest.mark.parametrize(("answer", "interval"), [
    (HeartbeatAnswer(heartbeat_interval=1, lease_ttl=300), 1.0),   # the parent's shorter one
    (HeartbeatAnswer(heartbeat_interval=20, lease_ttl=15), 5.0),   # a third of the lease
    (HeartbeatAnswer(heartbeat_interval=0, lease_ttl=0.3), 0.2),   # never below 0.2 s
    (HeartbeatAnswer(), 60.0),                                     # the child's own
])
def test_heartbeat_interval_follows_the_parent(tmp_path: Path, answer: HeartbeatAnswer,
                                               interval: float) -> None:
    t = FakeTime()
    worker = worker_for(tmp_path, FakeParent(heartbeat=answer), t)

    async def go() -> None:
        driver = asyncio.create_task(t.drive())
        worker._flush_wakeup = asyncio.Event()
        loop = asyncio.create_task(worker._heartbeat_loop())
        await until(lambda: len(t.ends) >= 3)
        loop.cancel()
        driver.cancel()

    asyncio.run(go())
    assert t.sleeps[:3] == [interval] * 3
    worker.spool.close()


def test_heartbeat_applies_the_cancel_list(tmp_path: Path) -> None:
    t = FakeTime()
    worker = worker_for(tmp_path, FakeParent(heartbeat=HeartbeatAnswer(cancel=["gone"])), t)
    worker.spool.mark_started("gone", 1)
    worker.held["gone"] = Held(package=TaskPackage(allocation_id="gone"),
                               allocation_id="gone", epoch=1, started=t.clock())

    async def go() -> None:
        await worker._heartbeat_once()

    asyncio.run(go())
    assert worker.stats.lost == 1 and worker.spool.allocation_ids() == []
    worker.spool.close()


def test_claim_backoff_doubles_to_the_cap_while_the_parent_is_down(tmp_path: Path) -> None:
    t = FakeTime()
    parent = FakeParent(claim_error=ParentUnreachable("down", reason="refused"))
    worker = worker_for(tmp_path, parent, t)

    async def go() -> None:
        worker._stopping, worker._slot_free = asyncio.Event(), asyncio.Event()
        worker._flush_wakeup = asyncio.Event()
        driver = asyncio.create_task(t.drive())
        loop = asyncio.create_task(worker._claim_loop())
        await until(lambda: len(t.ends) >= 8)
        worker._stopping.set()
        await loop
        driver.cancel()

    asyncio.run(go())
    assert t.sleeps[:8] == [1, 2, 4, 8, 16, MAX_BACKOFF, MAX_BACKOFF, MAX_BACKOFF]
    assert t.ends[:8] == [1001, 1003, 1007, 1015, 1031, 1061, 1091, 1121]
    assert worker._down_since == 1000.0  # the outage started on the injected clock
    worker.spool.close()


class Hanging:
    """A fetcher that never finishes; the first fetch asks the worker to stop (a signal
    arriving mid-fetch)."""

    def __init__(self) -> None:
        self.worker: ChildWorker | None = None
        self.stops = 1
        self.started = 0

    async def fetch(self, feed: Any, ctx: Any) -> FetchOutcome:
        self.started += 1
        assert self.worker is not None
        for _ in range(self.stops):
            self.worker.request_stop()
        await asyncio.Event().wait()
        return FetchOutcome()


def hanging_worker(tmp_path: Path, stops: int) -> tuple[ChildWorker, FakeParent, FakeTime,
                                                        Hanging]:
    t = FakeTime()
    pkg = TaskPackage(allocation_id="a1", task_id="t1", epoch=3,
                      feeds=[PackageFeed(id="F1", url="http://x.invalid/f", kind="hang")])
    parent = FakeParent(heartbeat=HeartbeatAnswer(heartbeat_interval=1, lease_ttl=30),
                        packages=[pkg])
    settings = settings_for(tmp_path, drain_timeout=600, capacity=1)
    registry = FetcherRegistry(settings.child, load_plugins=False)
    hang = Hanging()
    hang.stops = stops
    registry.register("hang", hang)
    worker = ChildWorker(settings, parent, Spool(settings.spool_path),  # type: ignore[arg-type]
                         install_signals=False, clock=t.clock, sleep=t.sleep,
                         registry=registry)
    hang.worker = worker
    return worker, parent, t, hang


def test_drain_deadline_releases_unfinished_work_on_the_injected_clock(tmp_path: Path) -> None:
    """First stop request: no new claims, held work gets child.drain_timeout (ten minutes
    here, of fake time) and is then released; the run ends cleanly (0)."""
    worker, parent, t, hang = hanging_worker(tmp_path, stops=1)

    async def go() -> int:
        driver = asyncio.create_task(t.drive())
        try:
            return await asyncio.wait_for(worker.run(), 30)
        finally:
            driver.cancel()

    assert asyncio.run(go()) == 0
    assert hang.started == 1 and parent.claims == 1
    assert ("a1", "released") in parent.statuses and worker.stats.released == 1
    # the drain deadline is the stop request's time plus drain_timeout, and the drain waited
    # until exactly then (the heartbeat's 1 s sleeps move the fake clock meanwhile)
    assert worker._drain_deadline is not None and worker._drain_deadline >= 1000.0 + 600
    assert worker._drain_deadline in t.ends and 600 in t.sleeps
    assert worker.spool.is_empty()
    worker.spool.close()


def test_second_stop_request_stops_at_once_without_exiting_the_process(
        tmp_path: Path) -> None:
    """The handler only records; the second request makes run() return 1 at once (held work
    cancelled, nothing released, no drain wait), instead of os._exit killing the process
    (which would end this test run)."""
    worker, parent, t, hang = hanging_worker(tmp_path, stops=2)

    async def go() -> int:
        driver = asyncio.create_task(t.drive())
        try:
            return await asyncio.wait_for(worker.run(), 30)
        finally:
            driver.cancel()

    assert asyncio.run(go()) == 1
    assert hang.started == 1
    assert not any(status == "released" for _, status in parent.statuses)
    assert t.now < 1000 + 600  # it did not wait for the drain
    assert worker.spool.allocation_ids() == ["a1"]  # kept for the next start
    worker.spool.close()


def test_stop_request_is_only_recorded_by_the_handler(tmp_path: Path) -> None:
    t = FakeTime()
    worker = worker_for(tmp_path, FakeParent(), t)

    async def go() -> None:
        worker._stop_request = asyncio.Event()
        worker.request_stop(None)
        worker.request_stop(None)
        # nothing acted yet: no drain deadline, no exit; just the two requests
        assert worker._stop_requests == [None, None] and worker._drain_deadline is None
        assert not worker._forced

    asyncio.run(go())
    worker.spool.close()
