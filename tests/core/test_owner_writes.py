"""Owner writes (task-status, upload, completion) are single conditional UPDATEs: their
protocol answers, lease renewal and counters, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from cascade_cli import errors
from cascade_cli.domain.dispatch import dispatch
from cascade_cli.protocol import (
    ArticleIn,
    FeedResultIn,
    HeartbeatIn,
    ReportCompletionIn,
    TaskStatusIn,
    UploadArticlesIn,
)
from cascade_cli.store import allocations as alloc_repo
from cascade_cli.store.models import Allocation, Event, Node, ScheduleRun
from tests.core.helpers import make_feeds, make_node, make_task


@pytest.fixture
def world(any_store, clock, settings):
    now = clock.now()
    a = make_node(any_store, now, "child-a", capacity=2)
    b = make_node(any_store, now, "child-b", capacity=2)
    feeds = make_feeds(any_store, now, 2)
    task_id = make_task(any_store, now, feeds)
    with any_store.session() as s:
        run_id = dispatch(s, now, settings, task_id=task_id).runs[0].schedule_run_id
    return any_store, a, b, run_id


def _claim(store, now, node, settings):
    with store.session() as s:
        (x,) = alloc_repo.claim(s, now, s.merge(node), settings, max_count=1)
        return x.id, x.epoch, x.feed_ids[0]


def _status(store, now, node, alloc_id, status, settings, epoch=None):
    with store.session() as s:
        return alloc_repo.set_status(s, now, s.merge(node), TaskStatusIn(
            allocation_id=alloc_id, status=status, epoch=epoch), settings).status


def _complete(store, now, node, alloc_id, feed, settings, count=0, epoch=None):
    with store.session() as s:
        return alloc_repo.report_completion(s, now, s.merge(node), ReportCompletionIn(
            allocation_id=alloc_id, article_count=count, epoch=epoch, results=[
                FeedResultIn(feed_id=feed, status="failed", error="boom", article_count=0)]),
            settings)


def test_answers_leases_and_counters(world, clock, settings):
    store, a, b, run_id = world
    alloc_id, epoch, feed = _claim(store, clock.now(), a, settings)
    with pytest.raises(alloc_repo.AllocationNotFound):
        _status(store, clock.now(), a, "nope", "executing", settings)
    with pytest.raises(errors.NotOwner):
        _status(store, clock.now(), b, alloc_id, "executing", settings)
    with pytest.raises(errors.LeaseSuperseded):
        _status(store, clock.now(), a, alloc_id, "executing", settings, epoch=epoch - 1)
    # numbers no database column holds still get the protocol's answers, not a driver error
    with pytest.raises(errors.LeaseSuperseded):
        _status(store, clock.now(), a, alloc_id, "executing", settings, epoch=2**63)
    with pytest.raises(alloc_repo.AllocationNotFound):
        _complete(store, clock.now(), a, "nope", feed, settings, count=5)
    # a count no INTEGER column holds never reaches the store: the wire model refuses it (422)
    with pytest.raises(ValidationError):
        ReportCompletionIn(allocation_id=alloc_id, article_count=2**63)
    assert _status(store, clock.now(), a, alloc_id, "executing", settings, epoch) == "executing"
    with store.session() as s:
        started = s.get(Allocation, alloc_id).started_at
    clock.advance(30)
    # executing again: no state change, started_at kept, lease renewed by the owner's write
    assert _status(store, clock.now(), a, alloc_id, "executing", settings) == "executing"
    with store.session() as s:
        row = s.get(Allocation, alloc_id)
        assert row.started_at == started
        assert row.lease_expires_at == clock.now() + timedelta(seconds=settings.parent.lease_ttl)
    arts = [ArticleIn(title=f"t{i}", url=f"http://x/{i}") for i in range(4)]
    for expected in (4, 0):  # a retried upload adds nothing
        with store.session() as s:
            assert alloc_repo.upload_articles(s, clock.now(), s.merge(a), UploadArticlesIn(
                allocation_id=alloc_id, articles=arts, epoch=epoch), settings) == (4, expected)
    done = _complete(store, clock.now(), a, alloc_id, feed, settings, count=2, epoch=epoch)
    assert done.status == "completed" and done.new_article_count == 4
    assert done.article_count == 2 and done.error_message == f"{feed}: boom"
    assert done.lease_expires_at is None and done.completed_at is not None
    # a repeat is answered unchanged; nothing else moves a terminal allocation
    again = _complete(store, clock.now(), a, alloc_id, feed, settings, count=9)
    assert again.status == "completed" and again.article_count == 2
    with pytest.raises(errors.InvalidTransition):
        _status(store, clock.now(), a, alloc_id, "failed", settings)
    with pytest.raises(errors.InvalidTransition), store.session() as s:
        alloc_repo.upload_articles(s, clock.now(), s.merge(a), UploadArticlesIn(
            allocation_id=alloc_id, articles=arts), settings)
    with store.session() as s:
        assert s.query(Event).filter_by(allocation_id=alloc_id,
                                        operation="report_completion").count() == 1
        assert s.get(ScheduleRun, run_id).open_allocations == 1


def test_released_and_failed(world, clock, settings):
    store, a, b, run_id = world
    alloc_id, epoch, feed = _claim(store, clock.now(), a, settings)
    assert _status(store, clock.now(), a, alloc_id, "released", settings, epoch) == "pending"
    # the node last held it, but it is back in the pool: superseded, not "not owner"
    with pytest.raises(errors.LeaseSuperseded):
        _complete(store, clock.now(), a, alloc_id, feed, settings)
    with pytest.raises(errors.NotOwner):
        _complete(store, clock.now(), b, alloc_id, feed, settings)
    for node in (a, b):  # two allocations: each node takes one
        alloc_id, epoch, feed = _claim(store, clock.now(), node, settings)
        assert _status(store, clock.now(), node, alloc_id, "failed", settings, epoch) == "failed"
        # a repeated failure report changes nothing; completing it is refused
        assert _status(store, clock.now(), node, alloc_id, "failed", settings) == "failed"
        with pytest.raises(errors.InvalidTransition):
            _complete(store, clock.now(), node, alloc_id, feed, settings)
    with store.session() as s:
        run = s.get(ScheduleRun, run_id)
        assert run.status == "finished" and run.open_allocations == 0


def test_heartbeat_marks_the_node_whether_row_or_orm_object(world, clock, settings):
    store, a, b, run_id = world
    alloc_id, epoch, feed = _claim(store, clock.now(), a, settings)
    # the row first: then merging the stale ORM object marks its old values dirty
    for node_of in (lambda s: alloc_repo.node_repo.get_row(s, a.id), lambda s: s.merge(a)):
        clock.advance(10)
        with store.session() as s:
            hb = alloc_repo.heartbeat(s, clock.now(), node_of(s), HeartbeatIn(
                running=[alloc_id, "gone"], hostname="h1"), settings)
        assert hb["cancel"] == ["gone"]
        with store.session() as s:
            node = s.get(Node, a.id)
            assert node.last_heartbeat_at == clock.now() and node.hostname == "h1"
            assert s.get(Allocation, alloc_id).lease_expires_at == clock.now() + timedelta(
                seconds=settings.parent.lease_ttl)
