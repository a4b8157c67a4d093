"""How the parent's request handlers reach the database: units of work run off the event loop.

A unit of work is ``fn(session, now)``: one transaction, committed if it returns, rolled back
if it raises.

* ``ThreadedDb``: a pool of threads, one transaction per unit; a transient deadlock or
  serialization failure is retried.
* ``BatchingDb`` (what the parent uses): one worker thread that *group-commits*. Units that
  queued up while it was busy run one after the other in one transaction, with one commit,
  and their callers are answered together: the commit, the BEGIN and the hand-off between
  the event loop and a thread were about half of what a small request cost, and under load
  a batch shares them. Results are what running the units one by one would give: if a unit
  raises, the batch is rolled back; the unit keeps its error if it is a protocol answer
  (otherwise it runs again alone), and every other unit runs again alone, in order. Nobody
  is answered before the transaction holding their work has committed.

  On SQLite one worker runs every unit (SQLite has one writer, and every transaction takes
  the write lock with ``BEGIN IMMEDIATE``). On PostgreSQL and MySQL/MariaDB the workers run
  the node requests, and other units (admin work, a dispatch, the reaper) run in a thread
  pool beside them. Measured on 2 cores with PostgreSQL: a second worker overlaps one
  batch's round trips with another batch's work (+15-20% allocations per second); a third
  adds little, and a thread per request costs more CPU per request (GIL contention) than
  overlapping its round trips gains. (Before run counters were settled at commit, see
  ``store.runs``, a second worker gained nothing: batches queued on the run's row.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy.orm import Session

from cascade_cli.clock import Clock
from cascade_cli.errors import DatabaseBusy, ProtocolError
from cascade_cli.store.engine import Store

T = TypeVar("T")
Unit = Callable[[Session, Any], T]
# A batch's prelude: reads ahead for the units' hints; may return a verifier (see BatchingDb).
Prelude = Callable[[Session, list[Any]], Callable[[Session], None] | None]
log = logging.getLogger("cascade.parent.db")

_TX_ATTEMPTS = 4


class ThreadedDb:
    """Runs units of work in worker threads (at most ``max_threads`` at once)."""

    def __init__(self, store: Store, clock: Clock, max_threads: int) -> None:
        self.store = store
        self.clock = clock
        self.max_threads = max_threads
        self._limiter: anyio.CapacityLimiter | None = None

    def call(self, fn: Unit[T]) -> T:
        """Run one unit in its own transaction, in the calling thread."""
        # A deadlock or serialization failure rolled the whole unit of work back: run it again
        # (bounded) instead of answering 500 for something the client did right.
        for attempt in range(_TX_ATTEMPTS):
            try:
                with self.store.session() as s:
                    return fn(s, self.clock.now())
            except DatabaseBusy as exc:  # translated by the store (store.faults)
                if attempt + 1 >= _TX_ATTEMPTS or not exc.transient:
                    raise
                log.warning("transient database conflict (%s), retrying the request's "
                            "transaction", exc.cause)
                time.sleep(0.005 * (attempt + 1))
        raise AssertionError("unreachable")

    async def run(self, fn: Unit[T], *, batch: bool = False, hint: Any = None) -> T:
        """Run ``fn`` off the event loop. ``batch`` (a short unit that may share a
        transaction with others) and ``hint`` (what the batch's prelude reads ahead for it)
        only matter to ``BatchingDb``."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_threads)
        return await anyio.to_thread.run_sync(self.call, fn, limiter=self._limiter)


class _Job:
    __slots__ = ("fn", "future", "loop", "batch", "hint", "ok", "value", "started",
                 "abandoned", "settled", "finished")

    def __init__(self, fn: Unit[Any], future: asyncio.Future[Any],
                 loop: asyncio.AbstractEventLoop, batch: bool, hint: Any = None) -> None:
        self.fn = fn
        self.hint = hint
        self.future = future
        self.loop = loop
        self.batch = batch
        self.ok = False
        self.value: Any = None
        # Both under BatchingDb._lock: the worker takes a job (started) unless its caller
        # gave up on it first (abandoned).
        self.started = False
        self.abandoned = False
        # On the event loop: the worker's results were handed over; ``finished`` is what a
        # cancelled caller waits on for a unit that had started.
        self.settled = False
        self.finished: asyncio.Future[None] | None = None


def _settle(jobs: list[_Job]) -> None:
    """On the event loop: hand each caller its result."""
    for job in jobs:
        job.settled = True
        if job.finished is not None and not job.finished.done():
            job.finished.set_result(None)
        if job.future.done():  # the caller was cancelled
            continue
        if job.ok:
            job.future.set_result(job.value)
        else:
            job.future.set_exception(job.value)


class BatchingDb(ThreadedDb):
    """``workers`` threads that group-commit batchable units (see the module docstring)."""

    IDLE_EXIT = 5.0  # seconds; an idle thread ends, and starts again on demand

    def __init__(self, store: Store, clock: Clock, *, workers: int = 1,
                 max_batch: int = 64, pool_threads: int | None = None,
                 prelude: Prelude | None = None) -> None:
        super().__init__(store, clock, max_threads=pool_threads or 1)
        # ``prelude(session, hints)`` runs first in a batch's transaction, with the units'
        # hints: what every unit would look up for itself, read once for all of them. It
        # may return a verifier, called after the units and before the commit: if it
        # raises, the batch is rolled back and every unit runs again alone.
        self.prelude = prelude
        self.workers = workers
        # With ``pool_threads``, units that are not batchable (admin work, a dispatch, the
        # reaper) run in a thread pool of that size beside the workers instead of in line.
        self.pooled = pool_threads is not None
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self.batches = 0  # transactions that carried more than one unit (for tests)

    async def run(self, fn: Unit[T], *, batch: bool = False, hint: Any = None) -> T:
        if self.pooled and not batch:
            return await super().run(fn)
        loop = asyncio.get_running_loop()
        job = _Job(fn, loop.create_future(), loop, batch, hint)
        self._queue.put(job)
        with self._lock:
            if len(self._threads) < self.workers:
                thread = threading.Thread(target=self._work, name="cascade-db", daemon=True)
                self._threads.add(thread)
                thread.start()
        try:
            return await job.future  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            with self._lock:
                if not job.started:
                    job.abandoned = True  # never run: as if the request had not arrived
                    raise
            # Started: it will commit. Like a thread runner, wait for it to end, so that
            # whoever cancelled us (a shutdown, say) knows the work is done or undone.
            if not job.settled:
                job.finished = loop.create_future()
                while not job.finished.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(job.finished)
            raise

    # --- the worker thread ---------------------------------------------------------------

    def _work(self) -> None:
        carry: _Job | None = None
        while True:
            if carry is not None:
                first, carry = carry, None
            else:
                try:
                    first = self._queue.get(timeout=self.IDLE_EXIT)
                except queue.Empty:
                    with self._lock:
                        if self._queue.empty():
                            self._threads.discard(threading.current_thread())
                            return
                    continue
            jobs = [first]
            if first.batch:
                while len(jobs) < self.max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if not nxt.batch:
                        carry = nxt  # runs alone, right after this batch
                        break
                    jobs.append(nxt)
            self._run_jobs(jobs)

    def _run_jobs(self, jobs: list[_Job]) -> None:
        with self._lock:
            live = [j for j in jobs if not j.abandoned]
            for job in live:
                job.started = True
        if len(live) == 1:
            self._run_alone(live[0])
        elif live:
            self._run_batch(live)
        # One wake-up of the event loop per loop that waits (usually one) for the batch.
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in live:
            by_loop.setdefault(job.loop, []).append(job)
        for loop, settled in by_loop.items():
            # RuntimeError: that loop is closed, nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, settled)

    def _run_alone(self, job: _Job) -> None:
        try:
            job.value, job.ok = self.call(job.fn), True
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, re-raised there
            job.value, job.ok = exc, False

    def _run_batch(self, jobs: list[_Job]) -> None:
        failed: _Job | None = None
        try:
            with self.store.session() as s:
                verify = None
                if self.prelude is not None:
                    verify = self.prelude(s, [job.hint for job in jobs if job.hint is not None])
                for job in jobs:
                    failed = job
                    job.value = job.fn(s, self.clock.now())
                failed = None
                if verify is not None:
                    verify(s)
            for job in jobs:
                job.ok = True
            with self._lock:
                self.batches += 1
            return
        except BaseException as exc:  # noqa: BLE001 - rolled back; settled below
            error = exc
        # Rolled back. The unit that raised a protocol error keeps it (run alone it would
        # have seen the same rows, written by the units before it, which run again below);
        # every other unit runs again on its own, in order.
        for job in jobs:
            if job is failed and isinstance(error, ProtocolError):
                job.value, job.ok = error, False
            else:
                self._run_alone(job)
