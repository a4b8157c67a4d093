"""store.dashboard on every database: the overview's counts, failure streaks, the failing feeds
first (NULLs included), the tasks' last runs and one run's details."""

from __future__ import annotations

from datetime import timedelta

from cascade_cli.domain.dispatch import dispatch
from cascade_cli.store import allocations as alloc_repo
from cascade_cli.store import dashboard
from cascade_cli.store.models import Delivery, Feed, FeedResult
from tests.core.helpers import make_feeds, make_node, make_task


def test_dashboard_queries(any_store, clock, settings) -> None:
    now = clock.now()
    a = make_node(any_store, now, "child-a")
    make_node(any_store, now, "child-b", online=False)
    ids = make_feeds(any_store, now, 4)  # MP_WXS_0..3; 3 is never fetched
    task_id = make_task(any_store, now, ids[:3], cron_exp="0 9 * * *")
    make_task(any_store, now, ids[:1], name="idle")
    with any_store.session() as s:
        run_id = dispatch(s, now, settings, task_id=task_id).runs[0].schedule_run_id
    with any_store.session() as s:
        claimed = alloc_repo.claim(s, now, s.merge(a), settings, max_count=1)
        assert len(claimed) == 1
    outcomes = {ids[0]: ["success", "failed", "failed"], ids[1]: ["failed"],
                ids[2]: ["failed", "success"]}
    with any_store.session() as s:
        n = 0
        for feed_id, statuses in outcomes.items():
            for status in statuses:
                n += 1
                s.add(FeedResult(allocation_id=f"x{n}", schedule_run_id=run_id, feed_id=feed_id,
                                 node_id=a.id, status=status, error="boom" if status == "failed"
                                 else None, created_at=now + timedelta(seconds=n)))
            s.get(Feed, feed_id).last_status = statuses[-1]
        for key, status in (("k1", "pending"), ("k2", "dead"), ("k3", "delivered")):
            s.add(Delivery(idempotency_key=key, schedule_run_id=run_id, task_id=task_id,
                           feed_id=ids[0], url="https://example.com/hook", body="{}",
                           status=status, created_at=now, updated_at=now))

    with any_store.session() as s:
        o = dashboard.overview(s, now, settings.parent.offline_after)
        assert (o.online, o.offline) == (1, 1)
        assert [(n.name, n.status, n.running) for n in o.nodes] == [
            ("child-a", "online", 1), ("child-b", "never seen", 0)]
        assert o.runs_24h == {"running": 1}
        assert o.allocations["claimed"] == 1 and o.allocations["pending"] >= 1
        assert o.failed_feeds == 2
        assert (o.webhook_pending, o.webhook_dead) == (1, 1)
        assert dashboard.running_by_node(s) == {a.id: 1}

        lines, total = dashboard.feed_lines(s)
        assert total == 4
        assert [(f.id, f.failure_streak) for f in lines] == [
            (ids[0], 2), (ids[1], 1), (ids[2], 0), (ids[3], 0)]
        assert dashboard.failure_streaks(s, []) == {}

        tasks = {t.name: t for t in dashboard.task_lines(s)}
        assert tasks["news"].last_run_status == "running" and tasks["news"].feeds == 3
        assert tasks["idle"].last_run_status is None and tasks["news"].cron_exp == "0 9 * * *"

        runs = dashboard.recent_runs(s)
        assert [r.id for r in runs] == [run_id] and runs[0].task_name == "news"
        d = dashboard.run_detail(s, run_id)
        assert d is not None and d.run.allocation_count == len(d.allocations) >= 1
        assert {x.status for x in d.allocations} >= {"claimed"}
        assert [x.node_name for x in d.allocations if x.status == "claimed"] == ["child-a"]
        assert len(d.results) == 6 and {r.node_name for r in d.results} == {"child-a"}
        assert sorted(x.status for x in d.deliveries) == ["dead", "delivered", "pending"]
        assert dashboard.run_detail(s, "no-such-run") is None
