"""BatchingDb (the SQLite runner): group commit gives the results of running units one by one."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from sqlalchemy import text

from cascade_cli.clock import FakeClock
from cascade_cli.errors import Conflict
from cascade_cli.store.engine import Store
from cascade_cli.web.db import BatchingDb


@pytest.fixture
def db(store: Store, clock: FakeClock) -> BatchingDb:
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TABLE scratch (k TEXT PRIMARY KEY)"))
    return BatchingDb(store, clock)


def rows(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT k FROM scratch ORDER BY k"))]


def insert(key: str) -> Any:
    def unit(s: Any, now: Any) -> str:
        s.execute(text("INSERT INTO scratch (k) VALUES (:k)"), {"k": key})
        return key
    return unit


async def _hold_worker(db: BatchingDb) -> tuple[asyncio.Task[Any], threading.Event]:
    """Occupy the worker with a unit that waits for the returned event."""
    entered, release = threading.Event(), threading.Event()

    def hold(s: Any, now: Any) -> None:
        entered.set()
        release.wait(10)

    first = asyncio.create_task(db.run(hold))
    while not entered.is_set():
        await asyncio.sleep(0.005)
    return first, release


async def _blocked_then(db: BatchingDb, units: list[tuple[Any, bool]]) -> list[Any]:
    """Hold the worker with a first unit, queue ``units`` behind it, then let it go: the
    queued batchable units reach the worker together."""
    first, release = await _hold_worker(db)
    tasks = [asyncio.create_task(db.run(fn, batch=b)) for fn, b in units]
    await asyncio.sleep(0.05)  # every task has queued its job
    release.set()
    await first
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_queued_units_share_one_transaction(db: BatchingDb, store: Store) -> None:
    keys = [f"k{i:02d}" for i in range(10)]
    results = asyncio.run(_blocked_then(db, [(insert(k), True) for k in keys]))
    assert results == keys
    assert rows(store) == keys
    assert db.batches == 1  # ten units, one commit


def test_protocol_error_in_a_batch_keeps_its_answer_and_the_others_commit(
        db: BatchingDb, store: Store) -> None:
    def refuse(s: Any, now: Any) -> None:
        s.execute(text("INSERT INTO scratch (k) VALUES ('refused')"))
        raise Conflict("no", code="conflict")

    results = asyncio.run(_blocked_then(db, [(insert("a"), True), (refuse, True),
                                             (insert("b"), True)]))
    assert results[0] == "a" and results[2] == "b"
    assert isinstance(results[1], Conflict)
    assert rows(store) == ["a", "b"]  # the refused unit's write was rolled back, once


def test_database_error_in_a_batch_is_the_units_own(db: BatchingDb, store: Store) -> None:
    # "a" twice: run one by one, the second insert fails on the primary key, the others commit.
    results = asyncio.run(_blocked_then(db, [(insert("a"), True), (insert("a"), True),
                                             (insert("c"), True)]))
    assert results[0] == "a" and results[2] == "c"
    assert isinstance(results[1], Exception) and "UNIQUE" in str(results[1])
    assert rows(store) == ["a", "c"]


def test_unbatchable_units_run_alone(db: BatchingDb, store: Store) -> None:
    results = asyncio.run(_blocked_then(db, [(insert("a"), True), (insert("b"), False),
                                             (insert("c"), True)]))
    assert results == ["a", "b", "c"]
    assert db.batches == 0


def test_a_cancelled_caller_s_unit_is_not_run(db: BatchingDb, store: Store) -> None:
    async def scenario() -> None:
        first, release = await _hold_worker(db)
        doomed = asyncio.create_task(db.run(insert("doomed"), batch=True))
        kept = asyncio.create_task(db.run(insert("kept"), batch=True))
        await asyncio.sleep(0.05)
        doomed.cancel()
        release.set()
        await first
        assert await kept == "kept"
        with pytest.raises(asyncio.CancelledError):
            await doomed

    asyncio.run(scenario())
    assert rows(store) == ["kept"]


def test_worker_thread_ends_when_idle_and_comes_back(db: BatchingDb, store: Store) -> None:
    db.IDLE_EXIT = 0.05  # type: ignore[misc]

    async def scenario() -> None:
        assert await db.run(insert("x"), batch=True) == "x"
        await asyncio.sleep(0.3)
        assert not db._threads
        assert await db.run(insert("y")) == "y"

    asyncio.run(scenario())
    assert rows(store) == ["x", "y"]


def test_a_cancelled_caller_waits_for_its_started_unit(db: BatchingDb, store: Store) -> None:
    """Like a thread runner: once the worker has started the unit, cancelling the caller
    waits for the unit to end (committed), then the caller is cancelled."""
    async def scenario() -> None:
        entered, release = threading.Event(), threading.Event()

        def slow(s: Any, now: Any) -> str:
            s.execute(text("INSERT INTO scratch (k) VALUES ('slow')"))
            entered.set()
            release.wait(10)
            return "slow"

        caller = asyncio.create_task(db.run(slow, batch=True))
        while not entered.is_set():
            await asyncio.sleep(0.005)
        caller.cancel()
        await asyncio.sleep(0.05)
        assert not caller.done()  # still waiting for the unit it started
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert rows(store) == ["slow"]  # committed before the caller ended

    asyncio.run(scenario())


def test_prelude_reads_ahead_once_per_batch_for_its_units(store: Store,
                                                         clock: FakeClock) -> None:
    """The prelude runs first in a batch's transaction, once, with the hints of its units;
    the units see what it read. A unit that runs alone gets no prelude (it looks up what it
    needs itself)."""
    calls: list[list[Any]] = []

    def prelude(s: Any, hints: list[Any]) -> None:
        calls.append(sorted(hints))
        s.info["read"] = set(hints)

    db = BatchingDb(store, clock, prelude=prelude)

    def unit(name: str) -> Any:
        def fn(s: Any, now: Any) -> tuple[str, bool]:
            return name, name in s.info.get("read", set())
        return fn

    async def scenario() -> tuple[list[Any], Any]:
        first, release = await _hold_worker(db)
        tasks = [asyncio.create_task(db.run(unit(n), batch=True, hint=n)) for n in "abc"]
        await asyncio.sleep(0.05)
        release.set()
        await first
        batched = await asyncio.gather(*tasks)
        alone = await db.run(unit("d"), batch=True, hint="d")
        return batched, alone

    batched, alone = asyncio.run(scenario())
    assert batched == [("a", True), ("b", True), ("c", True)]
    assert alone == ("d", False)
    assert calls == [["a", "b", "c"]]


def test_a_failing_verifier_reruns_every_unit_alone(store: Store, clock: FakeClock) -> None:
    """The prelude's verifier runs after the units, before the commit; when it raises, the
    batch's work is rolled back and each unit runs again in its own transaction."""
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TABLE scratch (k TEXT PRIMARY KEY)"))
    verified: list[int] = []

    def prelude(s: Any, hints: list[Any]) -> Any:
        def verify(s: Any) -> None:
            verified.append(len(hints))
            raise RuntimeError("changed meanwhile")
        return verify

    db = BatchingDb(store, clock, prelude=prelude)

    async def scenario() -> list[Any]:
        first, release = await _hold_worker(db)
        tasks = [asyncio.create_task(db.run(insert(k), batch=True, hint=k)) for k in "xyz"]
        await asyncio.sleep(0.05)
        release.set()
        await first
        return await asyncio.gather(*tasks)

    assert asyncio.run(scenario()) == ["x", "y", "z"]
    assert verified == [3]  # once, for the batch; the units alone have no prelude
    assert rows(store) == ["x", "y", "z"]  # each inserted once, by its own transaction
    assert db.batches == 0
