"""cascade purge: what goes, what stays, batches, dry run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from cascade_cli.errors import InvalidInput
from cascade_cli.store.models import (
    Allocation,
    Article,
    AuthNonce,
    Delivery,
    Event,
    FeedResult,
    ScheduleRun,
    new_id,
)
from cascade_cli.store.retention import parse_duration, purge
from tests.schedule.helpers import add_task


def count(store, model) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def make_run(s, task_id, when, *, status="finished", alloc_status="completed", trigger="manual",
             n_alloc=2):
    run = ScheduleRun(id=new_id(), task_id=task_id, scheduled_for=when, trigger=trigger,
                      status=status, created_at=when,
                      finished_at=when if status == "finished" else None)
    s.add(run)
    s.flush()
    for _ in range(n_alloc):
        a = Allocation(id=new_id(), schedule_run_id=run.id, task_id=task_id, feed_ids=["F"],
                       status=alloc_status, dispatched_at=when, created_at=when, updated_at=when)
        s.add(a)
        s.add(FeedResult(allocation_id=a.id, schedule_run_id=run.id, feed_id="F",
                         status="success", created_at=when))
    s.add(Article(id=new_id(), feed_id="F", title="t", url=f"https://x/{run.id}",
                  schedule_run_id=run.id, created_at=when))
    return run.id


@pytest.fixture
def history(store, clock):
    now = clock.now()
    old = now - timedelta(days=40)
    tid = add_task(store, old, cron="0 * * * *")
    ids = {}
    with store.session() as s:
        ids["old_done"] = [make_run(s, tid, old + timedelta(minutes=i)) for i in range(5)]
        ids["old_cron_latest"] = make_run(s, tid, old + timedelta(hours=1), trigger="cron")
        ids["old_cron_older"] = make_run(s, tid, old - timedelta(hours=1), trigger="cron")
        ids["old_running"] = make_run(s, tid, old + timedelta(minutes=30), status="running",
                                      alloc_status="pending")
        ids["recent"] = make_run(s, tid, now - timedelta(days=1))
        for st in ("delivered", "dead", "pending"):
            s.add(Delivery(idempotency_key=f"old-{st}", task_id=tid, url="https://h/x", body="{}",
                           status=st, created_at=old, updated_at=old))
        s.add(Delivery(idempotency_key="new-delivered", task_id=tid, url="https://h/x", body="{}",
                       status="delivered", created_at=now, updated_at=now))
        for i in range(7):
            s.add(Event(operation="x", created_at=old + timedelta(seconds=i)))
        s.add(Event(operation="x", created_at=now))
        s.add(AuthNonce(nonce="expired", node_id="n", expires_at=now - timedelta(minutes=1)))
        s.add(AuthNonce(nonce="live", node_id="n", expires_at=now + timedelta(minutes=5)))
    return ids


def test_purge_deletes_old_finished_history_only(store, clock, history):
    report = purge(store, clock.now(), timedelta(days=30), batch=2)
    c = report.counts
    assert c["runs"] == 6  # 5 manual + the older cron run; the latest cron run stays
    assert c["allocations"] == 12 and c["events"] == 7 and c["deliveries"] == 2
    assert c["nonces"] == 1 and "articles" not in c
    with store.session() as s:
        left = set(s.scalars(select(ScheduleRun.id)))
        assert left == {history["old_cron_latest"], history["old_running"], history["recent"]}
        assert {d.idempotency_key for d in s.scalars(select(Delivery))} == {
            "old-pending", "new-delivered"}
        assert s.scalar(select(func.count()).select_from(Allocation).where(
            Allocation.schedule_run_id == history["old_running"])) == 2
        assert list(s.scalars(select(AuthNonce.nonce))) == ["live"]
    assert count(store, Article) == 9  # articles kept
    assert report.batches > 3  # small batches, separate transactions
    # Idempotent.
    again = purge(store, clock.now(), timedelta(days=30))
    assert sum(again.counts.values()) == 0


def test_dry_run_counts_without_deleting(store, clock, history):
    before = {m: count(store, m) for m in (ScheduleRun, Allocation, Event, Delivery, Article)}
    report = purge(store, clock.now(), timedelta(days=30), dry_run=True, articles=True)
    assert report.counts["runs"] == 6 and report.counts["events"] == 7
    assert report.counts["articles"] == 8
    assert report.to_dict()["would_delete"]["deliveries"] == 2
    assert {m: count(store, m) for m in before} == before


def test_articles_only_when_asked(store, clock, history):
    purge(store, clock.now(), timedelta(days=30), articles=True)
    assert count(store, Article) == 1  # only the recent run's article
    assert count(store, FeedResult) == 2  # the recent run's; old ones go by age


@pytest.mark.parametrize("text,seconds", [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400),
                                          ("45s", 45), ("2w", 14 * 86400), ("1d12h", 129600),
                                          (" 1.5h ", 5400), ("30", 30)])
def test_parse_duration(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "d", "30x", "-1d", "0d", "3d garbage"])
def test_parse_duration_rejects(text):
    with pytest.raises(InvalidInput):
        parse_duration(text)
