"""A run's counter goes down when the terminal transitions' transaction commits, once per run
per transaction: completions of one run in concurrent transactions do not queue on the run's
row, a rolled-back transition counts nothing, and the run still finishes exactly once."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from cascade_cli.protocol import TaskStatusIn
from cascade_cli.store import allocations as alloc_repo
from cascade_cli.store.engine import Store, before_commit
from cascade_cli.store.models import ScheduleRun
from tests.core.helpers import claimed_run, complete_one, run_state


def test_many_in_one_transaction_and_a_rollback(any_store, clock, settings) -> None:
    node, run_id, allocs = claimed_run(any_store, clock.now(), settings, 3)
    with pytest.raises(RuntimeError), any_store.session() as s:
        complete_one(s, clock.now(), node, settings, allocs[0])
        raise RuntimeError("rolled back")
    assert run_state(any_store, run_id) == ("running", 3, 0)
    with any_store.session() as s:  # two completions, one decrement of 2 at commit
        complete_one(s, clock.now(), node, settings, allocs[0])
        complete_one(s, clock.now(), node, settings, allocs[1])
        assert s.get(ScheduleRun, run_id).open_allocations == 3  # not before the commit
    assert run_state(any_store, run_id) == ("running", 1, 0)
    with any_store.session() as s:
        alloc_repo.set_status(s, clock.now(), s.merge(node), TaskStatusIn(
            allocation_id=allocs[2][0], status="failed", epoch=allocs[2][1]), settings)
    assert run_state(any_store, run_id) == ("finished", 0, 1)


@pytest.mark.parametrize("kind", [pytest.param("postgres", marks=pytest.mark.postgres),
                                  pytest.param("mysql", marks=pytest.mark.mysql)])
def test_concurrent_completions_do_not_wait_for_each_other(kind, clock, settings) -> None:
    from cascade_cli.store import migrate
    from tests.dbservers import fresh_database

    with fresh_database(kind) as url:
        store = Store.from_url(url)
        try:
            migrate.upgrade(store)
            node, run_id, allocs = claimed_run(store, clock.now(), settings, 2)
            first_done = threading.Event()
            release_first = threading.Event()
            errors: list[BaseException] = []

            def first() -> None:
                try:
                    with store.session() as s:
                        complete_one(s, clock.now(), node, settings, allocs[0])
                        first_done.set()
                        assert release_first.wait(20)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)
                    first_done.set()

            t = threading.Thread(target=first)
            t.start()
            assert first_done.wait(20)
            # The first transaction is still open with its completion done. The second
            # commits its own completion of the same run without waiting for it (a lock wait
            # would hit the 2 s limit and fail).
            with store.session() as s:
                if kind == "postgres":
                    s.execute(text("SET LOCAL lock_timeout = '2s'"))
                else:
                    s.execute(text("SET SESSION innodb_lock_wait_timeout = 2"))
                complete_one(s, clock.now(), node, settings, allocs[1])
            assert run_state(store, run_id) == ("running", 1, 0)
            release_first.set()
            t.join(20)
            assert not errors, errors
            assert run_state(store, run_id) == ("finished", 0, 1)
        finally:
            store.dispose()


def test_before_commit_hooks(store) -> None:
    calls: list[str] = []

    class Hook:
        def __init__(self) -> None:
            self.items: list[str] = []

        def __call__(self, session) -> None:  # type: ignore[no-untyped-def]
            calls.append(",".join(self.items))

    with store.session() as s:
        before_commit(s, "k", Hook).items.append("a")
        before_commit(s, "k", Hook).items.append("b")  # the same hook object
        with s.begin_nested():
            pass  # a released savepoint is not the commit
        assert calls == []
    assert calls == ["a,b"]
    with pytest.raises(RuntimeError), store.session() as s:
        before_commit(s, "k", Hook).items.append("c")
        raise RuntimeError
    with store.session() as s:
        s.execute(text("SELECT 1"))
    assert calls == ["a,b"]  # the rolled-back hook never ran, nor leaked into the next
