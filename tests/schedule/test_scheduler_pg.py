"""Two scheduler "processes" (separate engines and pools) on one PostgreSQL database."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from cascade_cli.clock import FakeClock
from cascade_cli.domain import scheduler as sched
from cascade_cli.domain.scheduler import Scheduler
from cascade_cli.store import migrate
from cascade_cli.store.engine import Store
from cascade_cli.store.models import ScheduleRun
from tests.schedule.helpers import add_feed, add_task

pytestmark = pytest.mark.postgres


def test_two_schedulers_fire_each_tick_exactly_once(pg_url: str, settings) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    clock = FakeClock(start)
    stores = [Store.from_url(pg_url, pool_size=2) for _ in range(2)]
    try:
        migrate.upgrade(stores[0])
        add_feed(stores[0], start)
        every_second = add_task(stores[0], start, cron="* * * * * *", overlap_policy="allow")
        jittered = add_task(stores[0], start, cron="*/5 * * * * *", overlap_policy="allow",
                            jitter=3)
        schedulers = [Scheduler(st, clock, settings) for st in stores]
        fired: Counter[tuple[str, str]] = Counter()
        outcomes: Counter[str] = Counter()
        lock = threading.Lock()

        for _ in range(20):
            clock.advance(1)
            barrier = threading.Barrier(2)

            def work(s: Scheduler) -> None:
                barrier.wait()
                for r in s.tick():
                    with lock:
                        outcomes[r.action] += 1
                        if r.action == sched.FIRED:
                            fired[(r.task_id, r.scheduled_for)] += 1

            threads = [threading.Thread(target=work, args=(s,)) for s in schedulers]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)

        assert outcomes[sched.ERROR] == 0
        assert all(n == 1 for n in fired.values()), fired
        with stores[0].session() as s:
            rows = s.execute(select(ScheduleRun.task_id, ScheduleRun.scheduled_for)).all()
        per_tick = Counter(rows)
        assert all(n == 1 for n in per_tick.values())
        ticks = sorted(t for task, t in rows if task == every_second)
        assert ticks == [start + timedelta(seconds=i) for i in range(1, 21)]
        assert len([1 for task, _ in rows if task == jittered]) in (3, 4)
        assert len(fired) == len(rows)
    finally:
        for st in stores:
            st.dispose()


_CHILD = r"""
import sys
from datetime import UTC, datetime, timedelta
from cascade_cli.clock import FakeClock
from cascade_cli.config import load_settings
from cascade_cli.domain.scheduler import Scheduler
from cascade_cli.store.engine import Store

url, data_dir = sys.argv[1], sys.argv[2]
settings = load_settings(environ={}, overrides={"data_dir": data_dir})
start = datetime(2026, 3, 1, tzinfo=UTC)
clock = FakeClock(start)
store = Store.from_url(url, pool_size=2)
s = Scheduler(store, clock, settings)
fired = 0
for i in range(1, 41):
    clock.set(start + timedelta(seconds=i))
    fired += sum(1 for r in s.tick() if r.action == "fired")
    assert not [r for r in s.tick() if r.action == "error"]
print(fired)
"""


@pytest.mark.slow
def test_two_real_processes_fire_each_tick_once(pg_url: str, tmp_path) -> None:
    import subprocess
    import sys

    start = datetime(2026, 3, 1, tzinfo=UTC)
    store = Store.from_url(pg_url)
    try:
        migrate.upgrade(store)
        add_feed(store, start)
        task = add_task(store, start, cron="* * * * * *", overlap_policy="allow")
    finally:
        store.dispose()
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, pg_url, str(tmp_path / f"d{i}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=90) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    fired = [int(o[0].strip()) for o in outs]
    assert sum(fired) == 40
    store = Store.from_url(pg_url)
    try:
        with store.session() as s:
            ticks = sorted(s.scalars(select(ScheduleRun.scheduled_for).where(
                ScheduleRun.task_id == task)))
    finally:
        store.dispose()
    assert ticks == [start + timedelta(seconds=i) for i in range(1, 41)]
