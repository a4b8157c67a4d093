"""PostgreSQL: a completion for an allocation this process handed out is one statement (see
``allocations._complete_in_one``). Every outcome must be what the ordinary path gives: the
same answer or error, and the same allocation, feed results, feeds and events afterwards."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from cascade_cli import errors
from cascade_cli.protocol import ArticleIn, FeedResultIn, ReportCompletionIn, UploadArticlesIn
from cascade_cli.store import allocations as alloc_repo
from cascade_cli.store.engine import Store
from cascade_cli.store.models import Allocation, Event, Feed, FeedResult
from tests.core.helpers import claimed_run, complete_one, make_node

pytestmark = pytest.mark.postgres


def _world_state(store: Store, alloc_id: str, names: dict[str, str]) -> Any:
    """What the completion left behind, this world's ids replaced by ``names``."""
    def n(value: Any) -> Any:
        text = repr(value)
        for real, name in names.items():
            text = text.replace(real, name)
        return text

    with store.session() as s:
        a = s.get(Allocation, alloc_id)
        results = sorted(n((r.feed_id, r.status, r.article_count, r.new_article_count, r.error))
                         for r in s.scalars(select(FeedResult).where(
                             FeedResult.allocation_id == alloc_id)))
        fetched = sorted(n((f.id, f.last_status, f.last_error, f.etag)) for f in s.scalars(
            select(Feed).where(Feed.id.in_([k for k in names if k != alloc_id]))))
        events = sorted(n((e.operation, e.status, e.count, e.error, e.detail))
                        for e in s.scalars(select(Event).where(Event.allocation_id == alloc_id)))
        return (n((a.status, a.article_count, a.new_article_count, a.error_message,
                   a.result_summary, a.lease_expires_at is None)), results, fetched, events)


def _run(store: Store, clock: Any, settings: Any, case: str, one_statement: bool) -> Any:
    node, _, claimed = claimed_run(store, clock.now(), settings, 3, name=f"t-{one_statement}",
                                   node_name=f"n-{one_statement}", prefix=f"F{one_statement}_")
    (alloc_id, epoch, feed), (_, _, other_feed) = claimed[0], claimed[1]
    with store.session() as s:  # two articles stored for the feed: counted per feed result
        alloc_repo.upload_articles(s, clock.now(), s.merge(node), UploadArticlesIn(
            allocation_id=alloc_id, epoch=epoch, articles=[
                ArticleIn(guid=f"g{i}", feed_id=feed) for i in range(2)]), settings)
    caller = node
    results = [FeedResultIn(feed_id=feed, status="success", article_count=2, etag='"v1"')]
    count = 2
    if case == "failed_feed":
        results = [FeedResultIn(feed_id=feed, status="failed", error="HTTP 500")]
    elif case == "foreign_and_repeated":
        results += [FeedResultIn(feed_id=other_feed, status="failed", error="not mine"),
                    FeedResultIn(feed_id=feed, status="failed", error="a repeat")]
    elif case == "lower_count":
        count = 1  # a completion never lowers a counter
    elif case == "stale_epoch":
        epoch += 1
    elif case == "other_node":
        caller = make_node(store, clock.now(), f"stranger-{one_statement}")
    elif case == "repeat":
        with store.session() as s:
            complete_one(s, clock.now(), node, settings, claimed[0])
    elif case == "huge_epoch":
        epoch = 2**40
    body = ReportCompletionIn(allocation_id=alloc_id, epoch=epoch, results=results,
                              article_count=count)
    names = {feed: "<feed>", other_feed: "<other>", alloc_id: "<alloc>"}
    with store.session() as s:
        if not one_statement:
            store.facts.forget(alloc_id)
        try:
            done = alloc_repo.report_completion(s, clock.now(), s.merge(caller), body, settings)
            answer: Any = (done.status, done.article_count, done.error_message)
        except errors.CascadeError as exc:
            answer = (type(exc), str(exc))
            s.rollback()
    for real, name in names.items():
        answer = tuple(v.replace(real, name) if isinstance(v, str) else v for v in answer)
    return answer, _world_state(store, alloc_id, names)


@pytest.mark.parametrize("case", ["success", "failed_feed", "foreign_and_repeated",
                                  "lower_count", "stale_epoch", "other_node", "repeat",
                                  "huge_epoch"])
def test_every_outcome_matches_the_ordinary_path(pg_store, clock, settings, case) -> None:
    one = _run(pg_store, clock, settings, case, one_statement=True)
    ordinary = _run(pg_store, clock, settings, case, one_statement=False)
    assert one == ordinary
    answer = one[0]
    if case in ("success", "failed_feed", "foreign_and_repeated", "lower_count", "repeat"):
        assert answer[0] == "completed", answer
    else:
        assert issubclass(answer[0], errors.ProtocolError), answer
    if case == "failed_feed":
        assert answer[2] == "<feed>: HTTP 500"


def test_the_one_statement_path_is_taken(pg_store, clock, settings, monkeypatch) -> None:
    node, _, claimed = claimed_run(pg_store, clock.now(), settings, 1)

    def no_owner_write(*args: Any, **kw: Any) -> None:
        raise AssertionError("the ordinary path ran")

    monkeypatch.setattr(alloc_repo, "_owner_write", no_owner_write)
    with pg_store.session() as s:
        assert complete_one(s, clock.now(), node, settings, claimed[0]).status == "completed"
        assert pg_store.facts.recall(claimed[0][0]) is None  # finished: forgotten
