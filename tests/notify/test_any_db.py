"""Scheduler tick, queueing and sending on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from cascade_cli.clock import FakeClock
from cascade_cli.domain import scheduler as sched
from cascade_cli.domain.notify import Notifier, queue_run_notifications
from cascade_cli.domain.scheduler import Scheduler
from cascade_cli.store.models import Delivery
from cascade_cli.store.retention import purge
from tests.notify.conftest import add_run
from tests.schedule.helpers import add_feed, add_task


def test_schedule_queue_send_purge(any_store, fast_settings, receiver):
    clock = FakeClock(datetime(2026, 6, 1, 8, 59, tzinfo=UTC))
    add_feed(any_store, clock.now(), "F1")
    tid = add_task(any_store, clock.now(), cron="0 0 9 * * *", feeds=["F1"],
                   web_hook_url=receiver.url, webhook_secret="k", jitter=5)
    s = Scheduler(any_store, clock, fast_settings)
    clock.set(datetime(2026, 6, 1, 9, 0, 6, tzinfo=UTC))
    assert [r.action for r in s.tick()] == [sched.FIRED]
    assert Scheduler(any_store, clock, fast_settings).tick() == []
    run_id = add_run(any_store, clock.now(), tid, {"F1": 2})
    with any_store.session() as ss:
        assert queue_run_notifications(ss, clock.now(), run_id, fast_settings) == 1
        assert queue_run_notifications(ss, clock.now(), run_id, fast_settings) == 0
    with Notifier(any_store, clock, fast_settings) as n:
        assert n.deliver_due() == 1
        assert n.deliver_due() == 0
    with any_store.session() as ss:
        assert ss.scalar(select(Delivery.status)) == "delivered"
    assert len(receiver.requests) == 1
    clock.advance(timedelta(days=40).total_seconds())
    report = purge(any_store, clock.now(), timedelta(days=30), batch=1)
    assert report.counts["deliveries"] == 1
