"""Every model on SQLite, PostgreSQL and MariaDB: insert, read back, unique constraints."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cascade_cli.store.engine import Store
from cascade_cli.store.models import (
    AdminToken,
    Allocation,
    Article,
    AuthNonce,
    Delivery,
    Event,
    Feed,
    FeedResult,
    MessageTask,
    Node,
    ScheduleRun,
    new_id,
)

T0 = datetime(2026, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)


def _node(name: str = "n1", key: str = "CN" + "k" * 32) -> Node:
    return Node(name=name, api_key=key, secret_hash="hmac-sha256$00", public_key="pk",
                created_at=T0, updated_at=T0)


def _fill(s) -> dict[str, str]:  # type: ignore[no-untyped-def]
    node = _node()
    s.add(node)
    s.flush()
    feed = Feed(id="MP_WXS_123", mp_name="公众号", url="https://x.example/feed.xml",
                preferred_node=node.id, created_at=T0, updated_at=T0)
    task = MessageTask(name="morning", mps_id=["MP_WXS_123"], cron_exp="0 9 * * *",
                       headers={"X-A": "1"}, message_template="{{title}}" * 10,
                       created_at=T0, updated_at=T0)
    s.add_all([feed, task])
    s.flush()
    run = ScheduleRun(task_id=task.id, scheduled_for=T0, created_at=T0)
    s.add(run)
    s.flush()
    alloc = Allocation(schedule_run_id=run.id, task_id=task.id, task_name=task.name,
                       feed_ids=["MP_WXS_123"], node_id=node.id, status="claimed",
                       lease_expires_at=T0 + timedelta(seconds=300),
                       result_summary={"ok": 1}, dispatched_at=T0, created_at=T0, updated_at=T0)
    s.add(alloc)
    s.flush()
    big = "正文" * 50_000  # 100k characters, over MySQL's 64 KiB TEXT
    s.add_all([
        Article(id="a" * 64, feed_id=feed.id, guid="g1", title="标题", url="https://x/1",
                content=big, publish_time=T0, schedule_run_id=run.id, created_at=T0),
        FeedResult(allocation_id=alloc.id, schedule_run_id=run.id, feed_id=feed.id,
                   node_id=node.id, status="success", article_count=1, created_at=T0),
        Event(node_id=node.id, operation="heartbeat", detail={"n": 1}, created_at=T0),
        AuthNonce(nonce=f"{node.id}:abc", node_id=node.id, expires_at=T0),
        AdminToken(jti="j1", label="ops", created_at=T0, expires_at=T0),
        Delivery(idempotency_key="run:feed", task_id=task.id, url="https://hook", body=big,
                 created_at=T0, updated_at=T0),
    ])
    return {"node": node.id, "task": task.id, "run": run.id, "alloc": alloc.id}


def test_insert_and_read_every_model(any_store: Store) -> None:
    with any_store.session() as s:
        ids = _fill(s)
    with any_store.session() as s:
        node = s.get(Node, ids["node"])
        assert node is not None and node.enabled is True and node.max_capacity == 2
        assert node.created_at == T0 and node.created_at.tzinfo is not None
        feed = s.get(Feed, "MP_WXS_123")
        assert feed is not None and feed.mp_name == "公众号" and feed.preferred_node == node.id
        task = s.get(MessageTask, ids["task"])
        assert task is not None and task.mps_id == ["MP_WXS_123"] and task.headers == {"X-A": "1"}
        assert task.status == 1 and task.overlap_policy == "skip"
        run = s.get(ScheduleRun, ids["run"])
        assert run is not None and run.status == "running" and run.scheduled_for == T0
        alloc = s.get(Allocation, ids["alloc"])
        assert alloc is not None and alloc.feed_ids == ["MP_WXS_123"]
        assert alloc.lease_expires_at == T0 + timedelta(seconds=300)
        assert alloc.result_summary == {"ok": 1} and alloc.epoch == 0
        article = s.get(Article, ("MP_WXS_123", "a" * 64))  # keyed by (feed, identity)
        assert article is not None and len(article.content or "") == 100_000
        assert article.title == "标题"
        fr = s.scalar(select(FeedResult))
        assert fr is not None and fr.id is not None and fr.status == "success"
        ev = s.scalar(select(Event))
        assert ev is not None and ev.detail == {"n": 1} and ev.direction == "inbound"
        assert s.get(AuthNonce, f"{node.id}:abc") is not None
        assert s.get(AdminToken, "j1") is not None
        d = s.scalar(select(Delivery))
        assert d is not None and d.status == "pending" and len(d.body) == 100_000


def test_naive_and_offset_times_are_stored_as_utc(any_store: Store) -> None:
    from datetime import timezone

    plus8 = datetime(2026, 3, 1, 17, 0, tzinfo=timezone(timedelta(hours=8)))
    with any_store.session() as s:
        n = _node()
        n.last_heartbeat_at = plus8
        s.add(n)
    with any_store.session() as s:
        got = s.scalar(select(Node.last_heartbeat_at))
    assert got == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert got.utcoffset() == timedelta(0)


@pytest.mark.parametrize("make", [
    lambda ids: _node("n1", "CN" + "z" * 32),          # duplicate node name
    lambda ids: _node("n2", "CN" + "k" * 32),          # duplicate api key
    lambda ids: ScheduleRun(task_id=ids["task"], scheduled_for=T0, created_at=T0),  # same tick
    lambda ids: FeedResult(allocation_id=ids["alloc"], feed_id="MP_WXS_123",
                           status="failed", created_at=T0),  # same (allocation, feed)
    lambda ids: Delivery(idempotency_key="run:feed", task_id=ids["task"], url="u", body="b",
                         created_at=T0, updated_at=T0),  # same idempotency key
    lambda ids: Article(id="a" * 64, feed_id="MP_WXS_123", created_at=T0),  # same article
    lambda ids: AuthNonce(nonce=f"{ids['node']}:abc", node_id=ids["node"], expires_at=T0),
], ids=["node-name", "api-key", "run-tick", "feed-result", "delivery-key", "article", "nonce"])
def test_unique_constraints(any_store: Store, make) -> None:  # type: ignore[no-untyped-def]
    with any_store.session() as s:
        ids = _fill(s)
    with pytest.raises(IntegrityError), any_store.session() as s:
        s.add(make(ids))
        s.flush()
    # the failed unit of work was rolled back: what was stored is intact
    with any_store.session() as s:
        assert s.scalar(select(Node.name)) == "n1"
        assert len(list(s.scalars(select(ScheduleRun)))) == 1


def test_deleting_a_node_clears_feed_preference(any_store: Store) -> None:
    with any_store.session() as s:
        ids = _fill(s)
    with any_store.session() as s:
        s.execute(select(Node))
        s.delete(s.get(Node, ids["node"]))
    with any_store.session() as s:
        feed = s.get(Feed, "MP_WXS_123")
        assert feed is not None and feed.preferred_node is None


def test_new_ids_are_uuid7_in_creation_order() -> None:
    """Ids made later sort later (B-tree indexes keyed by them grow at their end) and are
    still unique and unguessable: 74 random bits each."""
    before = time.time_ns() // 1_000_000
    first = [new_id() for _ in range(2000)]
    time.sleep(0.002)
    later = new_id()
    after = time.time_ns() // 1_000_000
    assert len(set(first)) == len(first)
    for ident in (*first, later):
        parsed = uuid.UUID(hex=ident)
        assert len(ident) == 32 and parsed.hex == ident
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert before <= int(ident[:12], 16) <= after  # the creation time, in milliseconds
    assert max(first) < later
    # the random part differs even within one millisecond
    assert len({i[12:] for i in first}) == len(first)
