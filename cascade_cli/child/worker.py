"""The child daemon (``cascade run-child``): heartbeat, claim, fetch, spool, upload, report.

Four asyncio tasks share one ``ChildWorker``:

* the **heartbeat loop** runs on its own task at ``cascade.heartbeat_interval`` (or the parent's
  shorter ``heartbeat_interval``), listing every allocation the child still answers for, so a busy
  child never looks dead and its leases are renewed; it applies the parent's ``cancel`` list;
* the **claim loop** long-polls ``claim-task`` while capacity is free;
* one **execution task per allocation**: ``executing``, fetch every feed with a global and a
  per-host semaphore, then deliver the articles and the completion from memory (what the parent
  cannot take now goes to the spool; see ``delivery``);
* the **spool flusher** re-sends whatever the parent has not acknowledged, first on start and
  again on every reconnect.

Signal handlers only record the request (uvicorn's ``handle_exit`` model); a watcher task acts
on it. First SIGTERM/SIGINT: stop claiming, let held work finish within ``child.drain_timeout``
(release the rest), flush the spool, exit 0. Second: stop at once (held work is cancelled, what
is unacknowledged stays in the spool for the next start), exit 1.

Time is injected: ``clock`` (monotonic seconds) and ``sleep`` (an async sleep) default to
``time.monotonic`` and ``asyncio.sleep``; every wait the worker decides (heartbeat interval,
backoffs, the drain deadline, retry pauses) goes through them, so tests can run its timing logic
on a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cascade_cli import __version__
from cascade_cli.child.delivery import HeldResults, Results, SpooledResults
from cascade_cli.child.fetchers import (
    FeedSpec,
    FetchContext,
    FetcherRegistry,
    host_key,
    make_http_client,
)
from cascade_cli.child.metrics import ChildMetrics
from cascade_cli.child.spool import Encoded, Spool, SpooledArticle
from cascade_cli.client import AsyncParentClient
from cascade_cli.config import Settings
from cascade_cli.errors import (
    BadCredentials,
    ClientError,
    FetchError,
    LeaseLost,
    NodeDisabled,
    ParentRejected,
    ParentServerError,
    ParentUnreachable,
    WrongEndpoint,
)
from cascade_cli.protocol import HeartbeatAnswer, TaskPackage

log = logging.getLogger("cascade.child")

T = TypeVar("T")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

FATAL_AT_START = (BadCredentials, WrongEndpoint, NodeDisabled)
MAX_BACKOFF = 30.0
# Fetched articles wait in memory (already JSON-encoded) until every feed of the allocation is
# done, then are delivered from there; an allocation with more than this spools in chunks while
# it is fetched (bounding memory) and is delivered from the spool.
SPOOL_CHUNK_CHARS = 4 * 1024 * 1024


@dataclass
class Held:
    """An allocation this child is working on."""

    package: TaskPackage
    allocation_id: str
    epoch: int | None
    started: float
    task: asyncio.Task[None] | None = None
    fetched: bool = False  # fetching finished; the results are being delivered
    stats: dict[str, int] = field(default_factory=dict)
    pending: list[Encoded] = field(default_factory=list)  # (feed_id, json, count) per feed
    pending_chars: int = 0
    chunks_spooled: bool = False  # some of its articles went to the spool while fetching


@dataclass
class WorkerStats:
    claimed: int = 0
    completed: int = 0
    lost: int = 0
    released: int = 0
    feeds_ok: int = 0
    feeds_failed: int = 0
    articles: int = 0
    new_articles: int = 0


class ChildWorker:
    def __init__(self, settings: Settings, client: AsyncParentClient, spool: Spool, *,
                 burst: bool = False, max_allocations: int | None = None,
                 registry: FetcherRegistry | None = None,
                 install_signals: bool = True, metrics: ChildMetrics | None = None,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep) -> None:
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        self.metrics = metrics
        self.cfg = settings.child
        self.client = client
        self.spool = spool
        self.burst = burst
        self.max_allocations = max_allocations
        self.registry = registry or FetcherRegistry(self.cfg)
        self.install_signals = install_signals
        self.hostname = socket.gethostname()
        self.held: dict[str, Held] = {}
        self.stats = WorkerStats()
        if metrics is not None:
            metrics.held.set_function(lambda: len(self.held))
        self.heartbeat_interval = settings.cascade.heartbeat_interval
        # Stop requests (the signal, or None), recorded by request_stop, acted on by _watch_stop.
        self._stop_requests: list[int | None] = []
        self._stop_request: asyncio.Event | None = None
        self._forced = False  # a second stop request: stop at once
        self._drain_deadline: float | None = None
        self._down_since: float | None = None
        self._down_logged: set[str] = set()
        self._alloc_locks: dict[str, asyncio.Lock] = {}
        # Why --burst stopped without doing its work (parent unreachable or refusing): the
        # process then exits 1, as the docs promise, so cron and scripts see the failure.
        self.gave_up: str | None = None
        # allocation -> feed -> why its articles were dropped (reported failed on completion)
        self._failed_feeds: dict[str, dict[str, str]] = {}
        # Created in run(): asyncio primitives belong to the running loop.
        self._stopping: asyncio.Event
        self._slot_free: asyncio.Event
        self._flush_wakeup: asyncio.Event
        self._fetch_sem: asyncio.Semaphore
        self._host_sems: dict[str, asyncio.Semaphore] = {}
        self._ctx: FetchContext
        self._helpers: list[asyncio.Task[None]] = []  # heartbeat and spool flusher

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self) -> int:
        self._stopping = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._flush_wakeup = asyncio.Event()
        self._stop_request = asyncio.Event()
        if self._stop_requests:  # asked to stop before the loop ran
            self._stop_request.set()
        self._fetch_sem = asyncio.Semaphore(self.cfg.fetch_concurrency)
        http = make_http_client(self.cfg)
        # One parse thread for big documents (small ones parse on the loop, see
        # INLINE_PARSE_BYTES): the loop never waits long on feedparser, and big parses stay one
        # at a time (no extra memory or GIL fights; the loop keeps heartbeating meanwhile).
        parse_pool = ThreadPoolExecutor(1, thread_name_prefix="cascade-parse")
        self._ctx = FetchContext(http=http, settings=self.cfg, parse_executor=parse_pool)
        loop = asyncio.get_running_loop()
        if self.install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop, sig)
        log.info("child starting: parent %s, capacity %d, fetch concurrency %d (per host %d), "
                 "spool %s%s", self.client.base_url, self.cfg.capacity,
                 self.cfg.fetch_concurrency, self.cfg.per_host_concurrency, self.spool.path,
                 " (burst)" if self.burst else "")
        main = asyncio.create_task(self._main(), name="child-main")
        watcher = asyncio.create_task(self._watch_stop(main), name="stop-watcher")
        try:
            await main
        except asyncio.CancelledError:
            if not self._forced:
                raise  # run() itself was cancelled
        finally:
            # Whatever still runs (a forced stop, a failure) is cancelled: held work, the
            # heartbeat, the flusher.
            await self._cancel_all([*self._helpers, *(h.task for h in self.held.values()
                                                       if h.task is not None)])
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if self.install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            await http.aclose()
            parse_pool.shutdown(wait=False, cancel_futures=True)
        s = self.stats
        log.info("child stopped: %d allocations claimed, %d completed, %d lost, %d released; "
                 "%d articles (%d new); spool %s", s.claimed, s.completed, s.lost, s.released,
                 s.articles, s.new_articles, self.spool.counts())
        if self._forced:
            return 1
        if self.gave_up is not None:
            log.error("--burst gave up: %s (exit 1)", self.gave_up)
            return 1
        return 0

    async def _main(self) -> None:
        await self._startup()
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        flusher = asyncio.create_task(self._flusher_loop(), name="spool-flusher")
        self._helpers = [heartbeat, flusher]
        await self._claim_loop()
        await self._drain()
        await self._cancel_all([flusher])
        await self._final_flush()
        await self._cancel_all([heartbeat])

    @staticmethod
    async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
        tasks = [t for t in tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def request_stop(self, sig: int | None = None) -> None:
        """Signal handler: only records the request (first: drain; second: stop at once);
        ``_watch_stop`` acts on it in the loop."""
        self._stop_requests.append(sig)
        if self._stop_request is not None:
            self._stop_request.set()

    async def _watch_stop(self, main: asyncio.Task[None]) -> None:
        assert self._stop_request is not None
        acted = 0
        while True:
            await self._stop_request.wait()
            self._stop_request.clear()
            while acted < len(self._stop_requests):
                sig = self._stop_requests[acted]
                acted += 1
                name = signal.Signals(sig).name if sig else "stop"
                if acted == 1:
                    log.info("%s received: draining (no new claims; finishing held work "
                             "within %gs; send it again to exit at once)", name,
                             self.cfg.drain_timeout)
                    self._drain_deadline = self._clock() + self.cfg.drain_timeout
                    self._stopping.set()
                    self._slot_free.set()
                else:
                    log.warning("%s received again: exiting now; unacknowledged results stay "
                                "in the spool for the next start", name)
                    self._forced = True
                    main.cancel()
                    return

    async def _startup(self) -> None:
        """One heartbeat to fail fast on bad credentials or a wrong URL."""
        try:
            await self._heartbeat_once()
        except FATAL_AT_START:
            raise
        except ClientError as exc:
            self._parent_down(exc)
        if not self.spool.is_empty():
            log.info("spool holds unacknowledged results from an earlier run %s: flushing "
                     "first", self.spool.counts())
            await self._flush_spool()

    # --- reachability (logged once per outage) ---------------------------------------------

    def _parent_down(self, exc: BaseException) -> None:
        if self._down_since is None:
            self._down_since = self._clock()
            hint = f" ({exc.hint})" if isinstance(exc, ClientError) and exc.hint else ""
            # A 4xx (the auth throttle's 429 above all) is the parent refusing, not the parent
            # being down: say which, so nobody restarts a healthy parent.
            what = "parent refuses requests" if isinstance(exc, ParentRejected) \
                else "parent unavailable"
            log.warning("%s: %s%s; results stay in the spool, retrying with backoff (logged "
                        "once until it recovers)", what, exc, hint)

    def _parent_up(self) -> None:
        if self._down_since is not None:
            took = self._clock() - self._down_since
            self._down_since = None
            log.info("parent reachable again after %.0fs; flushing the spool", took)
            self._flush_wakeup.set()

    def _log_once(self, key: str, level: int, msg: str, *args: Any) -> None:
        if key not in self._down_logged:
            self._down_logged.add(key)
            log.log(level, msg, *args)

    # --- heartbeat -------------------------------------------------------------------------

    def _running_ids(self) -> list[str]:
        ids = list(self.held)
        ids += [a for a in self.spool.allocation_ids() if a not in self.held]
        return ids[:1000]

    async def _heartbeat_once(self) -> None:
        answer: HeartbeatAnswer | None = await self.client.heartbeat(
            running=self._running_ids(), capacity=self.cfg.capacity, hostname=self.hostname,
            version=__version__)
        self._parent_up()
        if answer is not None:
            wanted = self.settings.cascade.heartbeat_interval
            parent_iv, lease_ttl = answer.heartbeat_interval, answer.lease_ttl
            if parent_iv is not None and parent_iv > 0:
                wanted = min(wanted, parent_iv)
            if lease_ttl is not None and lease_ttl > 0:
                wanted = min(wanted, lease_ttl / 3)  # renew well before expiry
            self.heartbeat_interval = max(0.2, wanted)
            for alloc_id in answer.cancel:
                self._cancel(alloc_id, "cancelled by the parent")

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self._heartbeat_once()
            except (ParentUnreachable, ParentServerError) as exc:
                self._parent_down(exc)
            except ParentRejected as exc:
                self._parent_down(exc)
            except ClientError as exc:
                self._log_once(f"hb:{type(exc).__name__}", logging.ERROR,
                               "heartbeat refused: %s%s", exc,
                               f" (fix: {exc.hint})" if exc.hint else "")
            except Exception:
                log.exception("heartbeat failed unexpectedly")
            await self._sleep(self.heartbeat_interval)

    def _cancel(self, alloc_id: str, why: str) -> None:
        held = self.held.get(alloc_id)
        if held is None:
            return
        log.info("allocation %s: %s; dropping it", alloc_id, why)
        if held.task is not None and not held.task.done():
            held.task.cancel()
        self.spool.drop_allocation(alloc_id)
        self.stats.lost += 1
        if self.metrics is not None:
            self.metrics.allocation_finished("lost")

    # --- claim loop ------------------------------------------------------------------------

    async def _until_stopped(self, aw: Awaitable[T]) -> tuple[bool, T | None]:
        """Await ``aw`` unless a stop is requested first (then cancel it)."""
        task = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            stop.cancel()
        if task in done:
            return True, task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return False, None

    async def _sleep_or_stop(self, seconds: float) -> None:
        await self._within(self._stopping.wait(), seconds)

    async def _within(self, aw: Awaitable[T], seconds: float) -> tuple[bool, T | None]:
        """Await ``aw`` for at most ``seconds`` (of the injected sleep), then cancel it:
        ``(True, result)``, or ``(False, None)`` when the time ran out first."""
        task = asyncio.ensure_future(aw)
        timer = asyncio.ensure_future(self._sleep(max(0.0, seconds)))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            timer.cancel()
        if task.done():
            return True, task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False, None

    def _remaining_quota(self) -> int | None:
        if self.max_allocations is None:
            return None
        return max(0, self.max_allocations - self.stats.claimed)

    async def _claim_loop(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            quota = self._remaining_quota()
            if quota == 0:
                log.info("claimed %d allocations (--max-allocations): no more claims",
                         self.stats.claimed)
                return
            free = self.cfg.capacity - len(self.held)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            want = free if quota is None else min(free, quota)
            wait = 0 if self.burst else self.cfg.claim_wait
            try:
                finished, packages = await self._until_stopped(
                    self.client.claim(wait=wait, max=want))
            except (ParentUnreachable, ParentServerError) as exc:
                self._parent_down(exc)
                if self.burst and not self.held:
                    hint = f" (fix: {exc.hint})" if exc.hint else ""
                    log.error("parent unavailable in --burst mode: giving up (%s)%s", exc, hint)
                    self.gave_up = str(exc)
                    return
                await self._sleep_or_stop(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            except ParentRejected as exc:
                self._parent_down(exc)
                if self.burst and not self.held:  # a one-shot run does not wait it out
                    log.error("parent refuses requests in --burst mode: giving up (%s)", exc)
                    self.gave_up = str(exc)
                    return
                await self._sleep_or_stop(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
                continue
            except ClientError as exc:  # credentials, disabled, wrong path: wait for a fix
                self._log_once(f"claim:{type(exc).__name__}", logging.ERROR,
                               "claim refused: %s%s", exc,
                               f" (fix: {exc.hint})" if exc.hint else "")
                if self.burst and not self.held:
                    self.gave_up = str(exc)
                    return
                await self._sleep_or_stop(MAX_BACKOFF)
                continue
            if not finished:
                return
            backoff = 1.0
            self._parent_up()
            for package in packages or []:
                self._start(package)
            if not packages and self.burst:
                if not self.held:
                    if self.spool.is_empty():
                        log.info("no work left (--burst): stopping")
                        return
                    await self._flush_spool()
                    if not self.spool.is_empty():  # the spool stays on disk for the next run
                        self.gave_up = (f"results not uploaded, kept in the spool "
                                        f"{self.spool.path} for the next run")
                        return
                    continue
                self._slot_free.clear()
                await self._slot_free.wait()  # claim again when one finishes
            elif not packages and wait == 0:
                await self._sleep_or_stop(1.0)

    def _start(self, package: TaskPackage) -> None:
        alloc_id = package.allocation_id
        if not alloc_id:
            log.error("claim returned a package without allocation_id; ignored")
            return
        held = Held(package=package, allocation_id=alloc_id, epoch=package.epoch,
                    started=self._clock())
        self.held[alloc_id] = held
        self.stats.claimed += 1
        if self.metrics is not None:
            self.metrics.claimed.inc()
        self.spool.mark_started(alloc_id, held.epoch)
        log.debug("claimed allocation %s (task %s, %d feeds)", alloc_id,
                  package.task_name or package.task_id, len(package.feeds))
        held.task = asyncio.create_task(self._execute(held), name=f"alloc-{alloc_id}")
        held.task.add_done_callback(functools.partial(self._drop_finished, alloc_id))

    def _drop_finished(self, alloc_id: str, _task: asyncio.Task[None] | None = None) -> None:
        self._finished(alloc_id)

    def _finished(self, alloc_id: str) -> None:
        self.held.pop(alloc_id, None)
        self._slot_free.set()

    # --- execution -------------------------------------------------------------------------

    async def _execute(self, held: Held) -> None:
        alloc_id, epoch, pkg = held.allocation_id, held.epoch, held.package
        feeds = [FeedSpec.from_package(f) for f in pkg.feeds]
        try:
            await self.client.set_status(alloc_id, "executing", epoch=epoch)
        except LeaseLost as exc:
            self._lost(alloc_id, exc)
            return
        except ClientError as exc:
            log.debug("allocation %s: could not mark executing (%s); continuing", alloc_id, exc)
        try:
            results = await asyncio.gather(*(self._fetch_feed(held, f) for f in feeds))
        except Exception:
            log.exception("allocation %s: unexpected error while fetching", alloc_id)
            raise
        total = sum(r.get("article_count", 0) for r in results)
        delivery: Results
        if held.chunks_spooled:
            self.spool.add_completion(alloc_id, pkg.task_id, epoch, list(results), total,
                                      articles=held.pending)
            delivery = SpooledResults(self.spool, alloc_id)
        else:
            delivery = HeldResults(self.spool, alloc_id, pkg.task_id, epoch, held.pending,
                                   list(results), total)
        held.pending, held.pending_chars = [], 0
        held.fetched = True
        ok = sum(1 for r in results if r["status"] == "success")
        nm = sum(1 for r in results if r["status"] == "not_modified")
        failed = sum(1 for r in results if r["status"] == "failed")
        self.stats.feeds_ok += ok + nm
        self.stats.feeds_failed += failed
        outcome = await self._flush_allocation(alloc_id, delivery)
        duration = self._clock() - held.started
        comp_new = held.stats.get("new", 0)
        fields = {"allocation_id": alloc_id, "task_id": pkg.task_id,
                  "task_name": pkg.task_name, "attempt": pkg.attempt,
                  "epoch": epoch, "feeds": len(feeds), "feeds_ok": ok, "feeds_not_modified": nm,
                  "feeds_failed": failed, "articles": total, "new_articles": comp_new,
                  "duration_s": round(duration, 3), "outcome": outcome}
        if outcome == "completed":
            self.stats.completed += 1
            self.stats.articles += total
            self.stats.new_articles += comp_new
        if self.metrics is not None and outcome in ("completed", "spooled"):
            # "lost" was counted where the lease was found gone
            self.metrics.allocation_finished(outcome)
        log.info("allocation %s (task %s, attempt %s): %d feeds, %d ok, %d not modified, "
                 "%d failed; %d articles, %d new; %.2fs; %s", alloc_id,
                 pkg.task_name or pkg.task_id, pkg.attempt, len(feeds), ok,
                 nm, failed, total, comp_new, duration,
                 {"completed": "reported", "spooled": "kept in the spool (parent unavailable)",
                  "lost": "lease lost, dropped",
                  "failed": "the parent could not take the results (500), reported failed"
                  }.get(outcome, outcome),
                 extra={"fields": fields})

    def _host_sem(self, key: str) -> asyncio.Semaphore:
        sem = self._host_sems.get(key)
        if sem is None:
            sem = self._host_sems[key] = asyncio.Semaphore(self.cfg.per_host_concurrency)
        return sem

    async def _fetch_feed(self, held: Held, feed: FeedSpec) -> dict[str, Any]:
        result: dict[str, Any] = {"feed_id": feed.id, "status": "failed", "article_count": 0}
        async with self._host_sem(host_key(feed)), self._fetch_sem:
            start = self._clock()
            try:
                fetcher = self.registry.get(feed)
                outcome = await fetcher.fetch(feed, self._ctx)
            except FetchError as exc:
                result["error"] = str(exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a plug-in bug must fail one feed, not the child
                log.exception("feed %s: fetcher crashed", feed.id)
                result["error"] = f"fetcher error: {type(exc).__name__}: {exc}"
            else:
                if outcome.not_modified:
                    result["status"] = "not_modified"
                else:
                    self._keep(held, feed.id, outcome.articles)
                    result["status"] = "success"
                    result["article_count"] = len(outcome.articles)
                if outcome.etag:
                    result["etag"] = outcome.etag[:1024]
                if outcome.last_modified:
                    result["last_modified"] = outcome.last_modified[:255]
            took = self._clock() - start
            result["duration_ms"] = int(took * 1000)
        if self.metrics is not None:
            self.metrics.feed_fetched(result["status"], took, result["article_count"])
        if result["status"] == "failed":
            log.warning("feed %s (%s) failed (处理公众号失败): %s", feed.id,
                        feed.mp_name or feed.url, result.get("error"))
        return result

    def _keep(self, held: Held, feed_id: str, articles: list[dict[str, Any]]) -> None:
        """Encode a feed's articles once, as one fragment; spool them with the completion (or
        in chunks)."""
        if not articles:
            return
        raw = self.spool.encode_articles(articles)
        held.pending.append((feed_id, raw, len(articles)))
        held.pending_chars += len(raw)
        if held.pending_chars > SPOOL_CHUNK_CHARS:
            self.spool.add_encoded(held.allocation_id, held.epoch, held.pending)
            held.pending, held.pending_chars = [], 0
            held.chunks_spooled = True

    def _lost(self, alloc_id: str, exc: BaseException) -> None:
        log.warning("allocation %s: %s; the work was handed on, dropping it", alloc_id, exc)
        self.spool.drop_allocation(alloc_id)
        self.stats.lost += 1
        if self.metrics is not None:
            self.metrics.allocation_finished("lost")

    # --- flushing --------------------------------------------------------------------------

    async def _flush_allocation(self, alloc_id: str, delivery: Results | None = None) -> str:
        """Upload an allocation's articles in batches, then its completion, from ``delivery``
        (default: the spool). What the parent cannot take now is kept in the spool.

        Returns "completed", "lost", "spooled" (parent unavailable, kept) or "empty".
        """
        results = delivery or SpooledResults(self.spool, alloc_id)
        lock = self._alloc_locks.setdefault(alloc_id, asyncio.Lock())
        try:
            async with lock:
                outcome = await self._flush_allocation_locked(results)
            if outcome != "empty":  # reported (or dropped): its failed feeds are told
                self._failed_feeds.pop(alloc_id, None)
            if outcome == "completed":
                self._parent_up()
            return outcome
        except LeaseLost as exc:
            self._failed_feeds.pop(alloc_id, None)
            self._lost(alloc_id, exc)
            return "lost"
        except (ParentUnreachable, ParentServerError) as exc:
            results.keep()
            self._parent_down(exc)
            return "spooled"
        except ParentRejected as exc:
            results.keep()
            if exc.status == 429:
                self._parent_down(exc)
                return "spooled"
            raise
        except BaseException:  # a forced stop, or a bug: what was fetched is not lost
            results.keep()
            raise
        finally:
            if not lock.locked():
                self._alloc_locks.pop(alloc_id, None)

    async def _send_500_retried(self, attempts: int, send: Callable[[], Awaitable[T]]) -> T:
        """``send()``, again while the parent answers 500, at most ``attempts`` times in all.

        A 500 is the parent failing on this payload (a bug, or data it cannot store), not an
        outage (502/503/504 and unreachable stay spooled and retried without end): sent for
        ever, the same payload would hold its allocation and its run open for ever."""
        for attempt in range(1, attempts + 1):
            try:
                return await send()
            except ParentServerError as exc:
                if exc.status != 500 or attempt >= attempts:
                    raise
                await self._sleep(min(5.0, 0.25 * 2 ** attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _give_up_upload(self, results: Results, batch: list[SpooledArticle],
                        exc: ParentServerError, attempts: int) -> None:
        """Drop articles the parent answered 500 to ``attempts`` times; their feeds are
        reported failed with the reason in the completion."""
        count = sum(a.count for a in batch)
        reason = (f"upload of {count} article(s) failed {attempts} time(s) with {exc}; "
                  "the articles were dropped (see the parent's log)")
        feeds = {a.feed_id for a in batch if a.feed_id}
        alloc_id = results.allocation_id
        self._failed_feeds.setdefault(alloc_id, {}).update(dict.fromkeys(feeds, reason))
        log.error("allocation %s: feeds %s: %s", alloc_id, ", ".join(sorted(feeds)) or "?",
                  reason)
        results.dropped(batch)

    def _failed_results(self, alloc_id: str,
                        results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        reasons = self._failed_feeds.get(alloc_id) or {}
        return [{**r, "status": "failed", "error": reasons[str(r.get("feed_id"))]}
                if str(r.get("feed_id")) in reasons else r for r in results]

    async def _flush_allocation_locked(self, results: Results) -> str:
        alloc_id = results.allocation_id
        batch_size = self.cfg.upload_batch_size
        attempts = self.cfg.upload_attempts
        singly = False  # after a batch failed with 500: one feed at a time, to find the bad one
        while True:
            batch = results.articles(1 if singly else batch_size)
            if not batch:
                break
            tries = 1 if singly else attempts
            try:
                answer = await self._send_500_retried(tries, functools.partial(
                    self.client.upload_articles_json, alloc_id, [a.raw for a in batch],
                    epoch=batch[0].epoch))
            except ParentServerError as exc:
                if exc.status != 500:
                    raise
                if len(batch) > 1 and not singly:
                    singly = True
                    continue
                self._give_up_upload(results, batch, exc, tries)
                continue
            except ParentRejected as exc:
                count = sum(a.count for a in batch)
                if exc.status == 413 and count > 1:
                    if len(batch) == 1:
                        results.split(batch[0])  # one feed's articles: send them singly
                    batch_size = max(1, count // 2)
                    continue
                if exc.status in (413, 422, 400):
                    log.error("allocation %s: parent refused %d articles (%s); dropping them",
                              alloc_id, count, exc)
                    results.dropped(batch)
                    continue
                raise
            new = answer.new_count if answer is not None else 0
            results.delivered(batch, new)
            held = self.held.get(alloc_id)
            if held is not None:
                held.stats["new"] = held.stats.get("new", 0) + new
        comp = results.completion()
        if comp is None:
            return "empty"
        feed_results = self._failed_results(alloc_id, list(comp.results))
        try:
            await self._send_500_retried(attempts, functools.partial(
                self.client.report_completion, alloc_id, comp.task_id, feed_results,
                comp.article_count, epoch=comp.epoch))
        except ParentRejected as exc:
            if exc.status in (400, 413, 422):
                log.error("allocation %s: parent refused the completion (%s); dropping it",
                          alloc_id, exc)
                results.completed()
                return "lost"
            raise
        except ParentServerError as exc:
            if exc.status != 500:
                raise
            # The parent cannot take this completion: finish the allocation as failed with
            # the reason, rather than keep it (and its run) open for ever.
            why = (f"the parent answered the completion {attempts} time(s) with {exc}; "
                   "results dropped")
            log.error("allocation %s: %s", alloc_id, why)
            with contextlib.suppress(ClientError):
                await self.client.set_status(alloc_id, "failed", error_message=why,
                                             epoch=comp.epoch)
            results.forget()
            return "failed"
        results.completed()
        return "completed"

    async def _flush_spool(self) -> bool:
        """Flush every allocation not being worked on. True when the spool is empty after."""
        for alloc_id in self.spool.allocation_ids():
            held = self.held.get(alloc_id)
            if held is not None and not held.fetched:
                continue  # still fetching: its own task uploads it
            if held is not None:
                continue  # its own task is flushing it
            comp = self.spool.completion(alloc_id)
            outcome = await self._flush_allocation(alloc_id)
            if outcome == "spooled":
                return False
            if outcome == "completed" and comp is not None:
                self.stats.completed += 1
                self.stats.articles += comp.article_count
                if self.metrics is not None:
                    self.metrics.allocation_finished("completed")
                log.info("allocation %s: spooled completion delivered (%d articles)", alloc_id,
                         comp.article_count)
            elif outcome == "empty":
                # Articles of an allocation interrupted mid-fetch (crash): delivered; hand the
                # allocation back now instead of waiting for its lease to expire.
                await self._release(alloc_id, None, "interrupted by a restart of the child")
        return self.spool.is_empty()

    async def _flusher_loop(self) -> None:
        backoff = 2.0
        while True:
            await self._within(self._flush_wakeup.wait(), backoff)
            self._flush_wakeup.clear()
            pending = [a for a in self.spool.allocation_ids() if a not in self.held]
            if not pending:
                backoff = 2.0
                continue
            try:
                ok = await self._flush_spool()
            except Exception:
                log.exception("spool flush failed unexpectedly")
                ok = False
            backoff = 2.0 if ok else min(MAX_BACKOFF, backoff * 2)

    async def _release(self, alloc_id: str, epoch: int | None, why: str) -> None:
        try:
            answered, _ = await self._within(self.client.set_status(
                alloc_id, "released", error_message=why, epoch=epoch), 10)
        except ClientError as exc:
            log.debug("allocation %s: release not acknowledged (%s); its lease will expire",
                      alloc_id, exc)
        else:
            if answered:
                self.stats.released += 1
                if self.metrics is not None:
                    self.metrics.allocation_finished("released")
            else:
                log.debug("allocation %s: release not acknowledged (no answer in 10s); its "
                          "lease will expire", alloc_id)
        self.spool.drop_allocation(alloc_id)

    # --- drain -----------------------------------------------------------------------------

    async def _drain(self) -> None:
        if not self.held:
            return
        deadline = self._drain_deadline or self._clock() + self.cfg.drain_timeout
        tasks = [h.task for h in self.held.values() if h.task is not None]
        if self._stopping.is_set():
            log.info("draining %d allocation(s) (up to %.0fs)", len(tasks),
                     max(0.0, deadline - self._clock()))
        if tasks:
            if self._stopping.is_set():
                await self._within(asyncio.wait(tasks), deadline - self._clock())
            else:
                await asyncio.wait(tasks)
        pending = {t for t in tasks if not t.done()}
        # Whatever is still fetching is handed back; what reached the spool is delivered.
        to_release = {h.allocation_id: h.epoch for h in self.held.values()
                      if not h.fetched and h.task in pending}
        for alloc_id in self.spool.allocation_ids():
            if self.spool.completion(alloc_id) is None and alloc_id not in to_release:
                held = self.held.get(alloc_id)
                if held is None or not held.fetched:
                    to_release[alloc_id] = held.epoch if held else None
        for h in list(self.held.values()):
            if h.allocation_id in to_release and h.task is not None:
                h.task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        for alloc_id, epoch in to_release.items():
            log.info("allocation %s: not finished within the drain timeout; releasing it",
                     alloc_id)
            await self._release(alloc_id, epoch, "child shutting down")
            self.held.pop(alloc_id, None)

    async def _final_flush(self) -> None:
        if self.spool.is_empty():
            return
        budget = 10.0
        if self._stopping.is_set():
            budget = max(3.0, (self._drain_deadline or 0) - self._clock())
        await self._within(self._flush_spool(), budget)
        if not self.spool.is_empty():
            log.warning("exiting with unacknowledged results in the spool %s; they are sent "
                        "on the next start", self.spool.counts())
