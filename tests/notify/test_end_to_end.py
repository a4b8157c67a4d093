"""Cron tick -> dispatch -> claim/upload/complete (the lead's store functions) -> one
notification per feed with new articles -> delivered to a real local receiver."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import select

from cascade_cli.domain import scheduler as sched
from cascade_cli.domain.notify import Notifier
from cascade_cli.domain.scheduler import Scheduler
from cascade_cli.protocol import ArticleIn, FeedResultIn, ReportCompletionIn, UploadArticlesIn
from cascade_cli.store import allocations as alloc_repo
from cascade_cli.store import nodes as node_repo
from cascade_cli.store.models import Delivery, ScheduleRun
from tests.schedule.helpers import add_feed, add_task


def test_tick_to_webhook(store, clock, fast_settings, receiver):
    clock.set(datetime(2026, 5, 1, 8, 59, 30, tzinfo=UTC))
    for f in ("F1", "F2"):
        add_feed(store, clock.now(), f)
    add_task(store, clock.now(), cron="0 9 * * *", feeds=["F1", "F2"],
                   web_hook_url=receiver.url + "/hook", webhook_secret="k")
    with store.session() as s:
        node_repo.create_node(s, clock.now(), "child-1", max_capacity=4)
    s1 = Scheduler(store, clock, fast_settings)
    assert s1.tick() == []
    clock.set(datetime(2026, 5, 1, 9, 0, 0, 300000, tzinfo=UTC))
    assert [r.action for r in s1.tick()] == [sched.FIRED]

    with store.session() as s:
        node = node_repo.get_node(s, "child-1")
        node.last_heartbeat_at = clock.now()
        allocs = alloc_repo.claim(s, clock.now(), node, fast_settings, max_count=4)
        work = [(a.id, list(a.feed_ids), a.epoch) for a in allocs]
    assert sorted(f for _, feeds, _ in work for f in feeds) == ["F1", "F2"]
    for alloc_id, feeds, epoch in work:
        with store.session() as s:
            node = node_repo.get_node(s, "child-1")
            for feed in feeds:
                if feed == "F1":  # only F1 has news
                    alloc_repo.upload_articles(s, clock.now(), node, UploadArticlesIn(
                        allocation_id=alloc_id, epoch=epoch, feed_id=feed, articles=[
                            ArticleIn(title=f"News {i}", url=f"https://n.example/{i}",
                                      feed_id=feed, publish_time=1777626000 + i)
                            for i in range(3)]), fast_settings)
            alloc_repo.report_completion(s, clock.now(), node, ReportCompletionIn(
                allocation_id=alloc_id, epoch=epoch, results=[
                    FeedResultIn(feed_id=f, status="success",
                                 article_count=3 if f == "F1" else 0) for f in feeds]),
                fast_settings)

    with store.session() as s:
        run = s.scalar(select(ScheduleRun))
        assert run.status == "finished" and run.trigger == "cron"
        # Finishing the run only marked it finished: the notifier queues its messages.
        assert run.notified_at is None
        assert list(s.scalars(select(Delivery))) == []

    with Notifier(store, clock, fast_settings) as n:
        assert n.queue_finished() == 1
        with store.session() as s:
            rows = list(s.scalars(select(Delivery)))
            assert s.scalar(select(ScheduleRun.notified_at)) == clock.now()
        assert [(d.feed_id, d.status) for d in rows] == [("F1", "pending")]
        assert n.queue_finished() == 0  # once per run
        assert n.deliver_due() == 1
    [req] = receiver.requests
    body = json.loads(req.body)
    assert body["feed"]["id"] == "F1"
    assert [a["title"] for a in body["articles"]] == ["News 2", "News 1", "News 0"]
    assert req.headers["idempotency-key"] == f"{run.id}:F1"
    assert req.headers["x-cascade-signature"].startswith("sha256=")
    # The next tick is tomorrow; nothing fires in between.
    clock.advance(3600)
    assert s1.tick() == []
