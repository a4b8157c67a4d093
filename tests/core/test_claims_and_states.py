"""The state machine and claims, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import pytest

from cascade_cli import errors
from cascade_cli.domain.dispatch import dispatch
from cascade_cli.domain.reaper import reap_expired
from cascade_cli.protocol import (
    ArticleIn,
    FeedResultIn,
    HeartbeatIn,
    ReportCompletionIn,
    TaskStatusIn,
    UploadArticlesIn,
)
from cascade_cli.store import allocations as alloc_repo
from cascade_cli.store.models import Allocation, Article, ScheduleRun
from tests.core.helpers import make_feeds, make_node, make_task


@pytest.fixture
def world(any_store, clock, settings):
    now = clock.now()
    a = make_node(any_store, now, "child-a", capacity=2)
    b = make_node(any_store, now, "child-b", capacity=2)
    feeds = make_feeds(any_store, now, 4)
    task_id = make_task(any_store, now, feeds)
    return any_store, a, b, feeds, task_id


def _claim(store, now, node, settings, n=1):
    with store.session() as s:
        got = alloc_repo.claim(s, now, s.merge(node), settings, max_count=n)
        return [(x.id, x.epoch) for x in got]


def test_dispatch_balances_over_capacity_and_claims_are_exclusive(world, clock, settings):
    store, a, b, feeds, task_id = world
    with store.session() as s:
        result = dispatch(s, clock.now(), settings, task_id=task_id)
    # 4 feeds, 2 nodes x capacity 2 = 4 slots -> 4 allocations of 1 feed each
    assert result.allocations_created == 4
    assert result.online_nodes == 2
    got_a = _claim(store, clock.now(), a, settings, n=5)
    got_b = _claim(store, clock.now(), b, settings, n=5)
    assert len(got_a) == 2 and len(got_b) == 2  # capacity respected
    assert not {i for i, _ in got_a} & {i for i, _ in got_b}
    assert _claim(store, clock.now(), a, settings) == []  # at capacity


def test_overlap_skip_and_force(world, clock, settings):
    store, a, b, feeds, task_id = world
    with store.session() as s:
        dispatch(s, clock.now(), settings, task_id=task_id)
    with store.session() as s:
        again = dispatch(s, clock.now(), settings, task_id=task_id)
    assert again.allocations_created == 0
    assert "unfinished" in again.skipped[0]["reason"]
    clock.advance(1)
    with store.session() as s:
        forced = dispatch(s, clock.now(), settings, task_id=task_id, force=True)
    assert forced.allocations_created == 4


def test_full_cycle_and_state_machine(world, clock, settings):
    store, a, b, feeds, task_id = world
    with store.session() as s:
        dispatch(s, clock.now(), settings, task_id=task_id)
    (alloc_id, epoch), = _claim(store, clock.now(), a, settings)
    now = clock.now()
    with store.session() as s:
        node = s.merge(a)
        # another node cannot touch it
        with pytest.raises(errors.NotOwner):
            alloc_repo.set_status(s, now, s.merge(b), TaskStatusIn(
                allocation_id=alloc_id, status="executing"), settings)
    with store.session() as s:
        node = s.merge(a)
        alloc_repo.set_status(s, now, node, TaskStatusIn(allocation_id=alloc_id,
                                                         status="executing", epoch=epoch),
                              settings)
        feed = s.get(Allocation, alloc_id).feed_ids[0]
        arts = [ArticleIn(title=f"t{i}", url=f"http://x/{i}", guid=f"g{i}") for i in range(3)]
        assert alloc_repo.upload_articles(s, now, node, UploadArticlesIn(
            allocation_id=alloc_id, articles=arts, epoch=epoch), settings) == (3, 2 + 1)
        # the same articles again: stored once
        assert alloc_repo.upload_articles(s, now, node, UploadArticlesIn(
            allocation_id=alloc_id, articles=arts), settings) == (3, 0)
    with store.session() as s:
        done = alloc_repo.report_completion(s, now, s.merge(a), ReportCompletionIn(
            allocation_id=alloc_id, results=[FeedResultIn(feed_id=feed, status="success",
                                                          article_count=3)],
            article_count=3, epoch=epoch), settings)
        assert done.status == "completed" and done.new_article_count == 3
    with store.session() as s:  # repeat is idempotent
        again = alloc_repo.report_completion(s, now, s.merge(a), ReportCompletionIn(
            allocation_id=alloc_id, results=[], article_count=0, epoch=epoch), settings)
        assert again.status == "completed" and again.article_count == 3
    with store.session() as s, pytest.raises(errors.InvalidTransition):  # terminal stays
        alloc_repo.set_status(s, now, s.merge(a), TaskStatusIn(
            allocation_id=alloc_id, status="executing"), settings)
    with store.session() as s:
        assert s.query(Article).count() == 3


def test_lease_expiry_requeues_then_times_out_and_fences_old_holder(world, clock, settings):
    store, a, b, feeds, task_id = world
    with store.session() as s:
        dispatch(s, clock.now(), settings, task_id=task_id)
    (alloc_id, epoch1), = _claim(store, clock.now(), a, settings)
    clock.advance(settings.parent.lease_ttl + 1)
    with store.session() as s:
        out = reap_expired(s, clock.now(), settings)
    assert out["requeued"] >= 1
    # heartbeat from the old holder learns it must cancel
    with store.session() as s:
        hb = alloc_repo.heartbeat(s, clock.now(), s.merge(a), HeartbeatIn(running=[alloc_id]),
                                  settings)
    assert alloc_id in hb["cancel"]
    # b takes it over; a's late write with its old epoch is refused
    claimed = []
    while True:
        got = _claim(store, clock.now(), b, settings)
        if not got:
            break
        claimed += got
        if any(i == alloc_id for i, _ in got):
            break
    assert any(i == alloc_id for i, _ in claimed)
    with store.session() as s, pytest.raises(errors.LeaseSuperseded):
        alloc_repo.report_completion(s, clock.now(), s.merge(a), ReportCompletionIn(
            allocation_id=alloc_id, results=[], article_count=0, epoch=epoch1), settings)
    # exhaust attempts -> timeout, which is terminal
    for _ in range(settings.parent.max_attempts):
        clock.advance(settings.parent.lease_ttl + 1)
        with store.session() as s:
            reap_expired(s, clock.now(), settings)
        for node in (a, b):
            with store.session() as s:
                s.merge(node).last_heartbeat_at = clock.now()
            _claim(store, clock.now(), node, settings, n=2)
    clock.advance(settings.parent.lease_ttl + 1)
    with store.session() as s:
        reap_expired(s, clock.now(), settings)
    with store.session() as s:
        assert s.get(Allocation, alloc_id).status == "timeout"


def test_run_finishes_when_all_allocations_terminal(world, clock, settings):
    store, a, b, feeds, task_id = world
    with store.session() as s:
        res = dispatch(s, clock.now(), settings, task_id=task_id)
    run_id = res.runs[0].schedule_run_id
    for node in (a, b, a, b):
        for alloc_id, epoch in _claim(store, clock.now(), node, settings):
            with store.session() as s:
                alloc_repo.set_status(s, clock.now(), s.merge(node), TaskStatusIn(
                    allocation_id=alloc_id, status="failed", error_message="boom",
                    epoch=epoch), settings)
    with store.session() as s:
        assert s.get(ScheduleRun, run_id).status == "finished"


def test_release_returns_to_pool_without_using_an_attempt(world, clock, settings):
    store, a, b, feeds, task_id = world
    with store.session() as s:
        dispatch(s, clock.now(), settings, task_id=task_id)
    (alloc_id, epoch), = _claim(store, clock.now(), a, settings)
    with store.session() as s:
        alloc_repo.set_status(s, clock.now(), s.merge(a), TaskStatusIn(
            allocation_id=alloc_id, status="released", epoch=epoch), settings)
    with store.session() as s:
        row = s.get(Allocation, alloc_id)
        assert row.status == "pending" and row.attempt == 0


def test_missing_and_disabled_feeds_are_reported(any_store, clock, settings):
    now = clock.now()
    make_node(any_store, now, "n1")
    feeds = make_feeds(any_store, now, 2)
    task_id = make_task(any_store, now, feeds + ["MP_WXS_missing"])
    with any_store.session() as s:
        res = dispatch(s, now, settings, task_id=task_id)
    assert res.warnings[0]["missing_feeds"] == ["MP_WXS_missing"]
    empty = make_task(any_store, now, ["nope"], name="empty")
    with any_store.session() as s:
        res = dispatch(s, now, settings, task_id=empty)
    assert res.allocations_created == 0 and "exist" in res.skipped[0]["reason"]


def test_affinity_targets_node_then_returns_to_pool(any_store, clock, settings):
    now = clock.now()
    make_node(any_store, now, "pref")
    b = make_node(any_store, now, "other")
    feeds = make_feeds(any_store, now, 2, prefix="AFF_", preferred="pref")
    task_id = make_task(any_store, now, feeds)
    with any_store.session() as s:
        dispatch(s, now, settings, task_id=task_id)
    assert _claim(any_store, now, b, settings) == []  # targeted at 'pref'
    # 'pref' goes silent past offline_after + affinity_grace: the work returns to the pool
    clock.advance(settings.parent.offline_after + settings.parent.affinity_grace + 1)
    with any_store.session() as s:
        s.merge(b).last_heartbeat_at = clock.now()
    assert len(_claim(any_store, clock.now(), b, settings, n=2)) == 2


def test_package_carries_the_task_schedule(any_store, clock, settings):
    """The claim returns the task's message type and cron with each allocation (one round
    trip fewer where the database has UPDATE ... RETURNING), for tasks that differ."""
    now = clock.now()
    node = make_node(any_store, now, "child-a", capacity=3)
    feeds = make_feeds(any_store, now, 2)
    daily = make_task(any_store, now, feeds[:1], cron_exp="0 9 * * *", message_type=1)
    plain = make_task(any_store, now, feeds[1:], name="plain")
    with any_store.session() as s:
        dispatch(s, now, settings, task_id=daily)
        dispatch(s, now, settings, task_id=plain)
    with any_store.session() as s:
        claimed = alloc_repo.claim(s, now, s.merge(node), settings, max_count=3)
        packages = {p["task_id"]: p for p in
                    (alloc_repo.package(s, a, now) for a in claimed)}
    assert set(packages) == {daily, plain}
    assert (packages[daily]["message_type"], packages[daily]["cron_exp"]) == (1, "0 9 * * *")
    assert (packages[plain]["message_type"], packages[plain]["cron_exp"]) == (0, None)
    assert [f["id"] for f in packages[daily]["feeds"]] == feeds[:1]
    # the feeds returned with the claim (PostgreSQL) are what the separate lookup gives
    from cascade_cli.store.feeds import package_feeds

    with any_store.session() as s:
        looked_up = package_feeds(s, feeds)
    for p in packages.values():
        for feed in p["feeds"]:
            assert feed == looked_up[feed["id"]]


def test_feed_results_count_each_feeds_new_articles(any_store, clock, settings):
    """Each feed result's new-article count is what this allocation stored first for that
    feed (counted by the result's INSERT itself)."""
    from cascade_cli.store.models import FeedResult

    now = clock.now()
    node = make_node(any_store, now, "solo", capacity=1)
    feeds = make_feeds(any_store, now, 2)
    task_id = make_task(any_store, now, feeds)
    with any_store.session() as s:
        dispatch(s, now, settings, task_id=task_id)
    (alloc_id, epoch), = _claim(any_store, now, node, settings)
    one, two = feeds
    arts = ([ArticleIn(feed_id=one, title=f"t{i}", url=f"http://x/{i}") for i in range(3)]
            + [ArticleIn(feed_id=two, title="u", url="http://y/0")])
    with any_store.session() as s:
        assert alloc_repo.upload_articles(s, now, s.merge(node), UploadArticlesIn(
            allocation_id=alloc_id, articles=arts, epoch=epoch), settings) == (4, 4)
        alloc_repo.report_completion(s, now, s.merge(node), ReportCompletionIn(
            allocation_id=alloc_id, article_count=4, epoch=epoch, results=[
                FeedResultIn(feed_id=one, status="success", article_count=3),
                FeedResultIn(feed_id=two, status="success", article_count=1)]), settings)
    with any_store.session() as s:
        counts = {r.feed_id: (r.article_count, r.new_article_count, r.node_id)
                  for r in s.query(FeedResult).filter_by(allocation_id=alloc_id)}
    assert counts == {one: (3, 3, node.id), two: (1, 1, node.id)}
