"""Scheduler with a FakeClock: no sleeping, every tick is explicit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from cascade_cli.clock import FakeClock
from cascade_cli.config import Settings
from cascade_cli.domain import scheduler as sched
from cascade_cli.domain.scheduler import Scheduler, jitter_offset
from cascade_cli.store.engine import Store
from cascade_cli.store.models import RUN_FINISHED, Event, MessageTask, ScheduleRun
from tests.schedule.helpers import add_feed, add_task

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def env(store: Store, clock: FakeClock, settings: Settings):
    add_feed(store, clock.now())
    return store, clock, settings


def runs(store: Store, task_id: str | None = None) -> list[ScheduleRun]:
    with store.session() as s:
        q = select(ScheduleRun).order_by(ScheduleRun.scheduled_for)
        if task_id:
            q = q.where(ScheduleRun.task_id == task_id)
        return list(s.scalars(q))


def actions(results) -> list[str]:
    return [r.action for r in results]


def finish_all(store: Store) -> None:
    with store.session() as s:
        s.execute(update(ScheduleRun).values(status=RUN_FINISHED))


def test_five_field_fires_once_per_tick(env) -> None:
    store, clock, settings = env
    tid = add_task(store, clock.now(), cron="* * * * *", overlap_policy="allow")
    s = Scheduler(store, clock, settings)
    clock.advance(30)
    assert s.tick() == []
    clock.set(T0 + timedelta(minutes=1, seconds=0.2))
    res = s.tick()
    assert actions(res) == [sched.FIRED]
    assert res[0].scheduled_for == "2026-01-01T00:01:00Z"
    assert s.tick() == []  # same tick never twice
    clock.advance(20)
    assert s.tick() == []
    clock.set(T0 + timedelta(minutes=2, seconds=1))
    assert actions(s.tick()) == [sched.FIRED]
    got = runs(store, tid)
    assert [r.scheduled_for for r in got] == [T0 + timedelta(minutes=1),
                                              T0 + timedelta(minutes=2)]
    assert {r.trigger for r in got} == {"cron"}


def test_six_fields_have_seconds_first(env) -> None:
    store, clock, settings = env
    tid = add_task(store, clock.now(), cron="*/10 * * * * *", overlap_policy="allow")
    s = Scheduler(store, clock, settings)
    for _ in range(6):
        clock.advance(5)
        s.tick()
    assert [r.scheduled_for.second for r in runs(store, tid)] == [10, 20, 30]


def test_overlap_skip_then_fire_when_previous_finished(env) -> None:
    store, clock, settings = env
    tid = add_task(store, clock.now(), cron="* * * * *")  # overlap_policy default: skip
    s = Scheduler(store, clock, settings)
    clock.set(T0 + timedelta(minutes=1))
    assert actions(s.tick()) == [sched.FIRED]
    clock.set(T0 + timedelta(minutes=2))
    res = s.tick()
    assert actions(res) == [sched.SKIPPED_OVERLAP]
    assert s.tick() == []  # the skipped tick is not retried every pass
    finish_all(store)
    clock.set(T0 + timedelta(minutes=3))
    assert actions(s.tick()) == [sched.FIRED]
    assert len(runs(store, tid)) == 2


def test_overlap_allow_fires_every_tick(env) -> None:
    store, clock, settings = env
    tid = add_task(store, clock.now(), cron="* * * * *", overlap_policy="allow")
    s = Scheduler(store, clock, settings)
    for m in (1, 2, 3):
        clock.set(T0 + timedelta(minutes=m))
        assert actions(s.tick()) == [sched.FIRED]
    assert len(runs(store, tid)) == 3


def test_misfire_skip_waits_for_next_tick(env) -> None:
    store, clock, settings = env
    tid = add_task(store, clock.now(), cron="0 * * * *")  # hourly; grace 60 s by default
    s = Scheduler(store, clock, settings)
    clock.set(T0 + timedelta(hours=5, minutes=10))  # parent was down for hours
    res = s.tick()
    assert actions(res) == [sched.MISFIRE_SKIPPED]
    assert runs(store, tid) == []
    assert s.tick() == []
    clock.set(T0 + timedelta(hours=6, seconds=2))
    assert actions(s.tick()) == [sched.FIRED]
    with store.session() as ss:
        assert ss.scalar(select(func.count()).select_from(Event).where(
            Event.operation == "schedule_misfire")) == 1


def test_misfire_run_once_catches_up_once(env) -> None:
    store, clock, settings = env
    tid = add_task(store, clock.now(), cron="0 * * * *", misfire_policy="run_once")
    s = Scheduler(store, clock, settings)
    clock.set(T0 + timedelta(hours=5, minutes=10))
    res = s.tick()
    assert actions(res) == [sched.CATCH_UP]
    assert res[0].scheduled_for == "2026-01-01T05:00:00Z"  # the most recent missed tick
    assert s.tick() == []
    # A restarted process does not catch up again either.
    assert Scheduler(store, clock, settings).tick() == []
    assert len(runs(store, tid)) == 1


def test_late_within_grace_still_fires(env) -> None:
    store, clock, settings = env
    tid = add_task(store, clock.now(), cron="0 * * * *", misfire_grace=600)
    s = Scheduler(store, clock, settings)
    clock.set(T0 + timedelta(hours=1, minutes=5))
    assert actions(s.tick()) == [sched.FIRED]
    assert len(runs(store, tid)) == 1


def test_restart_resumes_from_database(env) -> None:
    store, clock, settings = env
    tid = add_task(store, clock.now(), cron="* * * * *", overlap_policy="allow")
    clock.set(T0 + timedelta(minutes=1))
    assert actions(Scheduler(store, clock, settings).tick()) == [sched.FIRED]
    # New process, same minute: the database says the tick was fired.
    assert Scheduler(store, clock, settings).tick() == []
    clock.set(T0 + timedelta(minutes=2, seconds=5))
    assert actions(Scheduler(store, clock, settings).tick()) == [sched.FIRED]
    assert len(runs(store, tid)) == 2


def test_disabled_and_cronless_tasks_are_ignored(env) -> None:
    store, clock, settings = env
    add_task(store, clock.now(), cron="* * * * *", status=0)
    add_task(store, clock.now(), cron=None)
    clock.set(T0 + timedelta(minutes=1))
    assert Scheduler(store, clock, settings).tick() == []
    assert runs(store) == []


def test_jitter_is_deterministic_and_bounded() -> None:
    tick = T0 + timedelta(hours=9)
    a = jitter_offset("task-a", tick, 30)
    assert a == jitter_offset("task-a", tick, 30)
    assert 0 <= a < 30
    offsets = {jitter_offset("task-a", tick + timedelta(minutes=i), 30) for i in range(20)}
    assert len(offsets) > 10  # spread over ticks
    assert jitter_offset("task-a", tick, 0) == 0


def test_jitter_delays_the_fire_time(env) -> None:
    store, clock, settings = env
    tid = add_task(store, clock.now(), cron="0 * * * *", jitter=40, overlap_policy="allow")
    tick = T0 + timedelta(hours=1)
    offset = jitter_offset(tid, tick, 40)
    s1, s2 = Scheduler(store, clock, settings), Scheduler(store, clock, settings)
    clock.set(tick + timedelta(seconds=offset) - timedelta(milliseconds=1))
    assert s1.tick() == [] and s2.tick() == []  # both processes agree: not yet
    clock.set(tick + timedelta(seconds=offset))
    res = s1.tick()
    assert actions(res) == [sched.FIRED]
    assert res[0].scheduled_for == "2026-01-01T01:00:00Z"  # nominal tick is the identity
    assert s2.tick() == []  # the other process sees the run in the database
    assert len(runs(store, tid)) == 1


def test_invalid_cron_is_reported_once_and_never_blocks_others(env) -> None:
    store, clock, settings = env
    bad = add_task(store, clock.now(), cron="61 * * * *", name="bad")
    good = add_task(store, clock.now(), cron="* * * * *", name="good")
    s = Scheduler(store, clock, settings)
    clock.set(T0 + timedelta(minutes=1))
    res = {r.task_id: r.action for r in s.tick()}
    assert res == {bad: sched.INVALID_CRON, good: sched.FIRED}
    Scheduler(store, clock, settings).tick()  # another process: no second event
    with store.session() as ss:
        task = ss.get(MessageTask, bad)
        assert task.last_error.startswith("invalid cron: ")
        assert "61 * * * *" in task.last_error
        events = list(ss.scalars(select(Event).where(
            Event.operation == "schedule_invalid_cron")))
    assert len(events) == 1 and events[0].task_id == bad
    # Fixed: the error is cleared and it runs.
    with store.session() as ss:
        ss.execute(update(MessageTask).where(MessageTask.id == bad).values(cron_exp="* * * * *"))
    clock.set(T0 + timedelta(minutes=2))
    res = {r.task_id: r.action for r in s.tick()}
    assert res[bad] == sched.FIRED
    with store.session() as ss:
        assert ss.get(MessageTask, bad).last_error is None


def test_dispatch_error_in_one_task_does_not_stop_others(env, monkeypatch) -> None:
    store, clock, settings = env
    a = add_task(store, clock.now(), cron="* * * * *", name="a")
    b = add_task(store, clock.now(), cron="* * * * *", name="b")
    from cascade_cli.domain import dispatch as dmod

    real = dmod.dispatch

    def flaky(s, now, settings, *, task_id=None, **kw):
        if task_id == a:
            raise RuntimeError("boom")
        return real(s, now, settings, task_id=task_id, **kw)

    monkeypatch.setattr(dmod, "dispatch", flaky)
    s = Scheduler(store, clock, settings)
    clock.set(T0 + timedelta(minutes=1))
    res = {r.task_id: r.action for r in s.tick()}
    assert res == {a: sched.ERROR, b: sched.FIRED}
    monkeypatch.setattr(dmod, "dispatch", real)
    # The failed tick is retried on the next pass (still within grace).
    clock.advance(2)
    assert {r.task_id: r.action for r in s.tick()} == {a: sched.FIRED}


def test_next_runs_and_session_next_runs(env) -> None:
    store, clock, settings = env
    add_task(store, clock.now(), cron="0 9 * * *", name="daily")
    add_task(store, clock.now(), cron="bad", name="broken")
    with store.session() as s:
        rows = sched.session_next_runs(s, None, clock.now(), 3, settings)
        one = sched.session_next_runs(s, "daily", clock.now(), 2, settings)
    by_name = {r["task_name"]: r for r in rows}
    assert [n["scheduled_for"] for n in by_name["daily"]["next"]] == [
        "2026-01-01T09:00:00Z", "2026-01-02T09:00:00Z", "2026-01-03T09:00:00Z"]
    assert by_name["broken"]["error"].startswith("invalid cron expression")
    assert len(one) == 1 and len(one[0]["next"]) == 2


def test_configured_time_zone_reads_cron_in_local_time(store: Store, clock: FakeClock,
                                                       tmp_path) -> None:
    from cascade_cli.config import load_settings

    settings = load_settings(environ={}, cwd=tmp_path, overrides={
        "data_dir": str(tmp_path / "data"), "parent.scheduler.timezone": "Asia/Shanghai"})
    add_feed(store, clock.now())
    tid = add_task(store, clock.now(), cron="0 9 * * *")
    s = Scheduler(store, clock, settings)
    assert sched.next_runs(_task(store, tid), T0, 1, settings)[0]["scheduled_for"] \
        == "2026-01-01T01:00:00Z"  # 09:00 in Beijing
    clock.set(datetime(2026, 1, 1, 1, 0, 0, 200000, tzinfo=UTC))
    assert actions(s.tick()) == [sched.FIRED]
    assert [r.scheduled_for for r in runs(store, tid)] == [datetime(2026, 1, 1, 1, tzinfo=UTC)]


def _task(store: Store, tid: str) -> MessageTask:
    with store.session() as s:
        task = s.get(MessageTask, tid)
        s.expunge(task)
        return task
