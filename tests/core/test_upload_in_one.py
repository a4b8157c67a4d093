"""PostgreSQL: an upload for an allocation this process handed out is one statement (see
``allocations._upload_in_one``). Every outcome must be what the ordinary path (lease renewal,
then merge) gives: the same answer or the same error, and the same rows afterwards."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from cascade_cli import errors
from cascade_cli.protocol import ArticleIn, TaskStatusIn, UploadArticlesIn
from cascade_cli.store import alloc_facts
from cascade_cli.store import allocations as alloc_repo
from cascade_cli.store.models import Allocation, Article
from tests.core.helpers import claimed_run, complete_one, make_node

pytestmark = pytest.mark.postgres


def _articles(n: int, feed: str | None = None, **kw: Any) -> list[ArticleIn]:
    return [ArticleIn(title=f"t{i}", url=f"https://e/{i}", guid=f"g{i}", feed_id=feed, **kw)
            for i in range(n)]


def _outcome(store: Any, clock: Any, caller: Any, settings: Any, body: UploadArticlesIn,
             one_statement: bool) -> tuple[Any, Any]:
    """(answer or (error class, message, status), the allocation's counter, lease, and
    stored article ids afterwards), by the path asked for."""
    with store.session() as s:
        known = store.facts.recall(body.allocation_id)
        if not one_statement:
            store.facts.forget(body.allocation_id)
        try:
            answer: Any = alloc_repo.upload_articles(s, clock.now(), s.merge(caller), body,
                                                     settings)
        except errors.CascadeError as exc:  # protocol errors and invalid input
            answer = (type(exc), str(exc), getattr(exc, "status", None))
            s.rollback()
        finally:
            if known is not None:  # put back what this test forgot
                store.facts.remember([_Row(body.allocation_id, known)])
    with store.session() as s:
        alloc = s.get(Allocation, body.allocation_id)
        state = None if alloc is None else (alloc.new_article_count, alloc.lease_expires_at)
        stored = sorted(s.scalars(select(Article.id).where(
            Article.allocation_id == body.allocation_id)))
    return answer, (state, stored)


class _Row:
    def __init__(self, alloc_id: str, facts: alloc_facts.AllocationFacts) -> None:
        self.id = alloc_id
        self.feed_ids = list(facts.feed_ids)
        self.schedule_run_id = facts.schedule_run_id
        self.task_id = facts.task_id


def _both_paths(pg_store: Any, clock: Any, settings: Any,
                scenario: Callable[[Any, Any, list[tuple[str, int, str]]],
                                   tuple[UploadArticlesIn, Any]],
                ) -> tuple[Any, Any]:
    """Run the scenario on two identical worlds, one by each path. A scenario gives the
    upload and the node that sends it."""
    results = []
    for one_statement in (True, False):
        node, _, claimed = claimed_run(pg_store, clock.now(), settings, 2,
                                       name=f"task-{one_statement}",
                                       node_name=f"n-{one_statement}",
                                       prefix=f"F{one_statement}_")
        body, caller = scenario(node, pg_store, claimed)
        clock.advance(5)
        with pg_store.session() as s:  # claimed here; forgotten once it is finished
            finished = s.get(Allocation, body.allocation_id).status == "completed"
            assert (pg_store.facts.recall(body.allocation_id) is None) == finished
        results.append((_outcome(pg_store, clock, caller, settings, body, one_statement),
                        claimed))
    return results[0], results[1]


def _normalised(result: Any) -> Any:
    """Replace this world's ids with their positions, so two worlds compare."""
    (answer, (state, stored)), claimed = result
    text = repr(answer)
    for i, (alloc_id, _, feed) in enumerate(claimed):
        text = text.replace(alloc_id, f"<alloc{i}>").replace(feed, f"<feed{i}>")
    return text, state[0] if state else None, len(stored)


def _check_same(pg_store: Any, clock: Any, settings: Any, scenario: Any) -> Any:
    one, ordinary = _both_paths(pg_store, clock, settings, scenario)
    assert _normalised(one) == _normalised(ordinary)
    return one


def test_owner_upload_counts_new_articles_and_renews_the_lease(pg_store, clock,
                                                                settings) -> None:
    def scenario(node: Any, store: Any, claimed: Any) -> tuple[UploadArticlesIn, Any]:
        alloc_id, epoch, feed = claimed[0]
        return UploadArticlesIn(allocation_id=alloc_id, epoch=epoch,
                                articles=_articles(3, feed) + _articles(1, feed)), node

    (answer, (state, stored)), _ = _check_same(pg_store, clock, settings, scenario)
    assert answer == (4, 3)
    assert state[0] == 3 and len(stored) == 3
    # renewed by the upload, made 5 s after the claim (see _both_paths)
    renewed = state[1] - timedelta(seconds=alloc_repo.lease_ttl(settings))
    with pg_store.session() as s:
        claimed_at = s.scalars(select(Allocation.claimed_at).where(
            Allocation.new_article_count == 3)).first()
    assert renewed - claimed_at == timedelta(seconds=5)


def test_a_repeated_upload_finds_nothing_new(pg_store, clock, settings) -> None:
    node, _, claimed = claimed_run(pg_store, clock.now(), settings, 1)
    alloc_id, epoch, feed = claimed[0]
    body = UploadArticlesIn(allocation_id=alloc_id, epoch=epoch, articles=_articles(5, feed))
    for expected in ((5, 5), (5, 0)):
        with pg_store.session() as s:
            assert alloc_repo.upload_articles(s, clock.now(), s.merge(node), body,
                                              settings) == expected
    with pg_store.session() as s:
        assert s.get(Allocation, alloc_id).new_article_count == 5


@pytest.mark.parametrize("case", ["stale_epoch", "other_node", "unknown_feed",
                                  "inferred_feed", "too_long", "completed", "unidentifiable",
                                  "huge_epoch"])
def test_every_outcome_matches_the_ordinary_path(pg_store, clock, settings, case) -> None:
    def scenario(node: Any, store: Any, claimed: Any) -> tuple[UploadArticlesIn, Any]:
        alloc_id, epoch, feed = claimed[0]
        articles, caller = _articles(2, feed), node
        if case == "stale_epoch":
            epoch += 1
        elif case == "other_node":
            caller = make_node(store, clock.now(), f"stranger-{alloc_id[-6:]}")
        elif case == "unknown_feed":
            articles += _articles(1, "elsewhere")
        elif case == "inferred_feed":  # no feed named: the allocation's only feed
            articles = [ArticleIn(title="x", url="https://e/x")] + articles
        elif case == "too_long":
            articles.append(ArticleIn(title="x", url="https://e/x", feed_id=feed, content="x" * (
                settings.parent.limits.max_content_length + 1)))
        elif case == "completed":
            with store.session() as s:
                complete_one(s, clock.now(), node, settings, claimed[0])
        elif case == "unidentifiable":
            articles.append(ArticleIn(feed_id=feed))
        else:  # huge_epoch: larger than any stored epoch can be
            epoch = 2**40
        return UploadArticlesIn(allocation_id=alloc_id, epoch=epoch, articles=articles), caller

    (answer, (state, stored)), _ = _check_same(pg_store, clock, settings, scenario)
    if case == "inferred_feed":
        assert answer == (3, 3) and len(stored) == 3
        return
    assert isinstance(answer[0], type) and issubclass(answer[0], errors.CascadeError), answer
    assert stored == [] and (state is None or state[0] == 0)


def test_the_one_statement_path_is_taken(pg_store, clock, settings, monkeypatch) -> None:
    """Without this, the tests above could pass with both runs on the ordinary path."""
    node, _, claimed = claimed_run(pg_store, clock.now(), settings, 1)
    alloc_id, epoch, feed = claimed[0]

    def no_owner_write(*args: Any, **kw: Any) -> None:
        raise AssertionError("the ordinary path ran")

    monkeypatch.setattr(alloc_repo, "_owner_write", no_owner_write)
    with pg_store.session() as s:
        assert alloc_repo.upload_articles(s, clock.now(), s.merge(node), UploadArticlesIn(
            allocation_id=alloc_id, epoch=epoch, articles=_articles(2, feed)),
            settings) == (2, 2)
    with pg_store.session() as s:  # and a status change still goes the ordinary way
        monkeypatch.undo()
        alloc_repo.set_status(s, clock.now(), s.merge(node), TaskStatusIn(
            allocation_id=alloc_id, status="executing", epoch=epoch), settings)
