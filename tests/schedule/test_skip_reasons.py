"""Why a task got no run is a ``SkipReason`` that callers branch on; the JSON answer and the
CLI keep the operator's message as ``reason`` (issue 17: no matching on message text)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from cascade_cli.domain import scheduler as sched
from cascade_cli.domain.dispatch import SkipReason, dispatch
from cascade_cli.domain.scheduler import Scheduler
from tests.schedule.helpers import add_feed, add_task


def _reasons(result) -> list[SkipReason]:  # type: ignore[no-untyped-def]
    return [s.reason for s in result.skips]


def test_each_skip_carries_its_reason_and_the_same_answer(store, clock, settings) -> None:
    add_feed(store, clock.now(), "F1")
    empty = add_task(store, clock.now(), cron=None, feeds=[], name="empty")
    gone = add_task(store, clock.now(), cron=None, feeds=["nope"], name="gone")
    off = add_task(store, clock.now(), cron=None, feeds=["F1"], name="off", status=0)
    busy = add_task(store, clock.now(), cron=None, feeds=["F1"], name="busy")
    with store.session() as s:
        first = dispatch(s, clock.now(), settings, task_id=busy)
    run_id = first.runs[0].schedule_run_id
    cases = [(empty, SkipReason.NO_FEEDS, {"reason": "task has no feeds (mps_id is empty)"}),
             (gone, SkipReason.NO_USABLE_FEEDS,
              {"reason": "none of its feeds exist or are enabled (missing: nope)"}),
             (off, SkipReason.DISABLED,
              {"reason": "task is disabled (enable it, or use --force)"}),
             (busy, SkipReason.PREVIOUS_RUN_UNFINISHED,
              {"reason": f"previous run {run_id} is unfinished (use --force, or "
                         "overlap_policy: allow)", "schedule_run_id": run_id})]
    for task_id, reason, answer in cases:
        with store.session() as s:
            result = dispatch(s, clock.now(), settings, task_id=task_id)
        assert _reasons(result) == [reason]
        [skipped] = result.to_dict()["skipped"]
        assert skipped == {"task_id": task_id, "task_name": result.skips[0].task_name,
                           **answer}
        assert json.loads(json.dumps(result.to_dict()))["skipped"] == [skipped]
    assert str(SkipReason.ALREADY_DISPATCHED) == "already_dispatched"


def test_a_tick_lost_to_another_process_is_already_fired(store, clock, settings,
                                                         monkeypatch) -> None:
    """The scheduler tells a lost race by the reason, whatever the message says."""
    clock.set(datetime(2026, 5, 1, 8, 59, 30, tzinfo=UTC))
    add_feed(store, clock.now(), "F1")
    add_task(store, clock.now(), cron="0 9 * * *", feeds=["F1"], overlap_policy="allow")
    clock.set(datetime(2026, 5, 1, 9, 0, 0, 300000, tzinfo=UTC))
    monkeypatch.setattr(sched.run_repo, "start_run", lambda *a, **k: None)
    [result] = Scheduler(store, clock, settings).tick()
    assert result.action == sched.ALREADY_FIRED == "already_fired"
    assert result.detail == "this tick was already dispatched"
