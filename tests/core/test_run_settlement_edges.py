"""Run settlement at commit (store.runs._Settlement, engine.before_commit), edge cases: the
counter goes down once per committed terminal transition, never for one that was undone,
and a run finishes (and queues its notifications) exactly once, also under concurrency."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select, text

from cascade_cli.domain.notify import Notifier
from cascade_cli.domain.reaper import reap_expired
from cascade_cli.protocol import ArticleIn, UploadArticlesIn
from cascade_cli.store import allocations as alloc_repo
from cascade_cli.store import migrate
from cascade_cli.store import runs as runs_mod
from cascade_cli.store.engine import Store
from cascade_cli.store.models import Allocation, Delivery, ScheduleRun
from tests.core.helpers import claimed_run, complete_one, run_state
from tests.dbservers import fresh_database

SERVERS = [pytest.param("postgres", marks=pytest.mark.postgres),
           pytest.param("mysql", marks=pytest.mark.mysql)]


@pytest.fixture(params=SERVERS)
def server_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    with fresh_database(request.param) as url:
        store = Store.from_url(url)
        migrate.upgrade(store)
        yield store
        store.dispose()








def _open(store: Store, run_id: str) -> int:
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(Allocation).where(
            Allocation.schedule_run_id == run_id,
            Allocation.status.in_(("pending", "claimed", "executing")))) or 0)


# --- savepoints ------------------------------------------------------------------------------

def test_a_transition_undone_by_a_savepoint_rollback_is_not_counted(any_store, clock,
                                                                     settings) -> None:
    """before_commit's contract: "a rollback of the transaction drops it". A terminal
    transition made inside a savepoint that is rolled back is undone, yet it stays recorded
    in the settlement and is counted at the outer commit: the run finishes (and queues its
    notifications) with an allocation still open."""
    node, run_id, allocs = claimed_run(any_store, clock.now(), settings, 1)
    with any_store.session() as s, pytest.raises(RuntimeError), s.begin_nested():
        complete_one(s, clock.now(), node, settings, allocs[0])
        raise RuntimeError("undo this completion")
    assert _open(any_store, run_id) == 1  # the completion was undone...
    assert run_state(any_store, run_id) == ("running", 1, 0)  # ...so the run must not finish


def test_the_outer_commit_with_a_savepoint_still_open_settles(any_store, clock,
                                                              settings) -> None:
    """A unit that leaves a savepoint open: Store.session() settles, then the commit releases
    the savepoint and commits."""
    node, run_id, allocs = claimed_run(any_store, clock.now(), settings, 1)
    with any_store.session() as s:
        s.begin_nested()
        complete_one(s, clock.now(), node, settings, allocs[0])
    assert _open(any_store, run_id) == 0
    assert run_state(any_store, run_id) == ("finished", 0, 1)


def test_a_commit_that_would_skip_the_settlement_is_refused(any_store, clock,
                                                             settings) -> None:
    """Hooks run from Store.session(); a commit made another way with a settlement pending
    is refused (its decrement would be lost), and changes nothing."""
    node, run_id, allocs = claimed_run(any_store, clock.now(), settings, 1)
    s = any_store._factory()
    try:
        complete_one(s, clock.now(), node, settings, allocs[0])
        with pytest.raises(RuntimeError, match="Store.session"):
            s.commit()
        s.rollback()
    finally:
        s.close()
    assert _open(any_store, run_id) == 1
    assert run_state(any_store, run_id) == ("running", 1, 0)


# --- a settlement that fails at commit --------------------------------------------------------

def test_a_failing_settlement_rolls_back_and_leaves_nothing_behind(
        any_store, clock, settings, monkeypatch: pytest.MonkeyPatch) -> None:
    node, run_id, allocs = claimed_run(any_store, clock.now(), settings, 2)
    real = runs_mod._decrement
    calls = [0]

    def failing(conn, run_id, by):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("settlement failed")
        return real(conn, run_id, by)

    monkeypatch.setattr(runs_mod, "_decrement", failing)
    with pytest.raises(RuntimeError), any_store.session() as s:
        complete_one(s, clock.now(), node, settings, allocs[0])
    assert _open(any_store, run_id) == 2  # the completion was rolled back
    with any_store.session() as s:
        s.execute(text("SELECT 1"))
    assert calls[0] == 1  # nothing left over for a later transaction
    with any_store.session() as s:
        complete_one(s, clock.now(), node, settings, allocs[0])
        complete_one(s, clock.now(), node, settings, allocs[1])
    assert calls[0] == 2  # one decrement (by 2) for the run
    assert run_state(any_store, run_id) == ("finished", 0, 1)


# --- notifications: queued by the notifier, not by the settlement -------------------------------

def test_the_settlement_only_finishes_the_run_and_the_notifier_queues_once(any_store, clock,
                                                                          settings) -> None:
    node, run_id, allocs = claimed_run(any_store, clock.now(), settings, 3,
                                  web_hook_url="https://example.org/hook")
    with any_store.session() as s:
        for alloc_id, epoch, feed in allocs:
            alloc_repo.upload_articles(s, clock.now(), s.merge(node), UploadArticlesIn(
                allocation_id=alloc_id, epoch=epoch, feed_id=feed,
                articles=[ArticleIn(guid=f"{feed}-{i}", title=f"t{i}",
                                    url=f"https://example.org/{feed}/{i}") for i in range(2)]),
                settings)
    with any_store.session() as s:
        for alloc in allocs:
            complete_one(s, clock.now(), node, settings, alloc)
    assert run_state(any_store, run_id) == ("finished", 0, 1)
    with any_store.session() as s:
        assert s.scalars(select(Delivery.idempotency_key)).all() == []
        assert s.get(ScheduleRun, run_id).notified_at is None
        assert runs_mod.unnotified_runs(s) == [run_id]
    # Two parent processes' notifiers (two stores on one database): one queues the run.
    other = Store.from_url(str(any_store.engine.url.render_as_string(hide_password=False)))
    try:
        with Notifier(any_store, clock, settings) as n1, Notifier(other, clock, settings) as n2:
            assert n1.queue_finished() + n2.queue_finished() == 3
            assert n2.queue_finished() == n1.queue_finished() == 0
    finally:
        other.dispose()
    with any_store.session() as s:
        keys = sorted(s.scalars(select(Delivery.idempotency_key)).all())
        assert keys == sorted(f"{run_id}:{f}" for _, _, f in allocs)
        assert s.get(ScheduleRun, run_id).notified_at == clock.now()
        assert runs_mod.unnotified_runs(s) == []


def test_a_run_is_claimed_for_its_notifications_by_one_transaction(server_store, clock,
                                                                   settings) -> None:
    """Two transactions race to queue one finished run: the second waits for the first's
    row lock and then finds ``notified_at`` set (PostgreSQL and MariaDB)."""
    store = server_store
    node, run_id, allocs = claimed_run(store, clock.now(), settings, 1,
                                       web_hook_url="https://example.org/hook")
    with store.session() as s:
        complete_one(s, clock.now(), node, settings, allocs[0])
    first = _Paused(store, clock, lambda s, now: runs_mod.claim_notification(s, now, run_id))
    first.start()
    assert first.settled.wait(20)
    second = _Paused(store, clock, lambda s, now: runs_mod.claim_notification(s, now, run_id))
    second.start()
    assert not second.settled.wait(0.5)  # waits for the first one's row lock
    first.release.set()
    first.join(20)
    assert second.settled.wait(20)
    second.release.set()
    second.join(20)
    assert not first.errors and not second.errors, (first.errors, second.errors)
    assert (first.result, second.result) == (True, False)


# --- concurrency on PostgreSQL and MariaDB ---------------------------------------------------------

def _lock_timeout(s, seconds: int) -> None:  # type: ignore[no-untyped-def]
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text(f"SET LOCAL lock_timeout = '{seconds}s'"))
    else:
        s.execute(text(f"SET SESSION innodb_lock_wait_timeout = {seconds}"))


class _Paused(threading.Thread):
    """``work(session, now)`` in its own transaction; the commit stops after the settlement
    (a later before-commit hook) until ``release`` is set."""

    def __init__(self, store: Store, clock, work) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True)
        self.store, self.clock, self.work = store, clock, work
        self.settled = threading.Event()
        self.release = threading.Event()
        self.errors: list[BaseException] = []
        self.result = None

    def run(self) -> None:
        from cascade_cli.store.engine import before_commit

        def pause(session) -> None:  # type: ignore[no-untyped-def]
            self.settled.set()
            assert self.release.wait(30)

        try:
            with self.store.session() as s:
                _lock_timeout(s, 10)
                self.result = self.work(s, self.clock.now())
                before_commit(s, "zz.review.pause", lambda: pause)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)
        finally:
            self.settled.set()


def test_crossing_runs_in_concurrent_transactions_do_not_deadlock(server_store, clock,
                                                                  settings) -> None:
    store = server_store
    node_a, run_1, allocs_1 = claimed_run(store, clock.now(), settings, 2, "one", "child-a", "A_")
    node_b, run_2, allocs_2 = claimed_run(store, clock.now(), settings, 2, "two", "child-b", "B_")
    barrier = threading.Barrier(2, timeout=20)
    errors: list[BaseException] = []

    def txn(first, second) -> None:  # type: ignore[no-untyped-def]
        try:
            with store.session() as s:
                _lock_timeout(s, 5)
                complete_one(s, clock.now(), *first)
                complete_one(s, clock.now(), *second)
                barrier.wait()  # both hold their allocation rows; now both commit
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=txn, args=((node_a, settings, allocs_1[0]),
                                                  (node_b, settings, allocs_2[0]))),
               threading.Thread(target=txn, args=((node_b, settings, allocs_2[1]),
                                                  (node_a, settings, allocs_1[1])))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert run_state(store, run_1) == ("finished", 0, 1)
    assert run_state(store, run_2) == ("finished", 0, 1)


@pytest.fixture
def last_attempt(tmp_path):  # type: ignore[no-untyped-def]
    from cascade_cli.config import load_settings
    return load_settings(environ={}, cwd=tmp_path, overrides={
        "data_dir": str(tmp_path / "data"), "parent.max_attempts": 1})


def _reaper_world(store: Store, clock, settings):  # type: ignore[no-untyped-def]
    """Two claimed allocations on their last attempt; the second's lease renewed so that
    only the first has expired once the clock is moved on by ``ttl``."""
    node, run_id, allocs = claimed_run(store, clock.now(), settings, 2)
    ttl = settings.parent.lease_ttl
    clock.advance(ttl / 2)
    from cascade_cli.protocol import HeartbeatIn
    with store.session() as s:
        alloc_repo.heartbeat(s, clock.now(), s.merge(node), HeartbeatIn(running=[allocs[1][0]]),
                             settings)
    clock.advance(ttl / 2 + 1)
    return node, run_id, allocs


@pytest.mark.parametrize("first", ["reaper", "completion"])
def test_reaper_and_completion_of_a_run_s_last_two_allocations(server_store, clock,
                                                               last_attempt, first: str) -> None:
    store, settings = server_store, last_attempt
    node, run_id, allocs = _reaper_world(store, clock, settings)
    reap = lambda s, now: reap_expired(s, now, settings)  # noqa: E731
    complete = lambda s, now: complete_one(s, now, node, settings, allocs[1])  # noqa: E731
    one, two = (reap, complete) if first == "reaper" else (complete, reap)
    paused = _Paused(store, clock, one)
    paused.start()
    assert paused.settled.wait(20)
    assert not paused.errors, paused.errors
    other = _Paused(store, clock, two)
    other.release.set()
    other.start()
    other.join(1)
    assert other.is_alive()  # its settlement waits for the paused one's run row
    paused.release.set()
    paused.join(20)
    other.join(20)
    assert not paused.errors and not other.errors, (paused.errors, other.errors)
    reaped = paused.result if first == "reaper" else other.result
    assert reaped["timed_out"] == 1  # type: ignore[index]
    assert _open(store, run_id) == 0
    assert run_state(store, run_id) == ("finished", 0, 1)


def test_two_batching_workers_settle_every_run_once(server_store, clock, settings) -> None:
    """The parent's set-up on PostgreSQL/MySQL: two group-committing workers, completions
    and failures of allocations of several runs interleaved, the reaper beside them. Every
    run finishes exactly once; no database error (deadlock, lock wait) on the way, not even
    one absorbed by running a failed batch's units again alone."""
    import asyncio
    import random

    from sqlalchemy import event

    from cascade_cli.protocol import TaskStatusIn
    from cascade_cli.web.db import BatchingDb

    store = server_store
    worlds = [claimed_run(store, clock.now(), settings, 10, f"t{i}", f"child-{i}", f"F{i}_")
              for i in range(4)]
    db_errors: list[str] = []
    event.listen(store.engine, "handle_error",
                 lambda ctx: db_errors.append(str(ctx.original_exception)))
    units = []
    for node, _, allocs in worlds:
        for i, alloc in enumerate(allocs):
            if i % 4 == 3:
                units.append(lambda s, now, node=node, a=alloc: alloc_repo.set_status(
                    s, now, node, TaskStatusIn(allocation_id=a[0], epoch=a[1],
                                               status="failed"), settings))
            else:
                units.append(lambda s, now, node=node, a=alloc: complete_one(
                    s, now, node, settings, a))
    random.Random(7).shuffle(units)
    db = BatchingDb(store, clock, workers=2, pool_threads=4)

    async def scenario() -> list[object]:
        jobs = []
        for i, unit in enumerate(units):
            jobs.append(asyncio.create_task(db.run(unit, batch=True)))
            if i % 10 == 0:
                jobs.append(asyncio.create_task(
                    db.run(lambda s, now: reap_expired(s, now, settings))))
                await asyncio.sleep(0.002)
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(scenario())
    assert not [r for r in results if isinstance(r, BaseException)]
    assert not db_errors, db_errors
    assert db.batches > 0
    for _, run_id, _ in worlds:
        assert run_state(store, run_id) == ("finished", 0, 1)
