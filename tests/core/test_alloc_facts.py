"""What a parent process remembers of the allocations it claimed (``store.alloc_facts``) is
owned by its Store and forgotten when the allocation leaves the holder's hands: finished,
released, or requeued by the reaper. A requeued allocation may be claimed next through
another parent process; this one must not take its one-statement path for it on the strength
of what it remembered from the earlier claim."""

from __future__ import annotations

from typing import Any

import pytest

from cascade_cli.domain.reaper import reap_expired
from cascade_cli.protocol import ArticleIn, TaskStatusIn, UploadArticlesIn
from cascade_cli.store import allocations as alloc_repo
from cascade_cli.store.alloc_facts import FactsMemory
from cascade_cli.store.dialects import postgresql as pg_dialect
from cascade_cli.store.engine import Store
from tests.core.helpers import claimed_run, make_node


class _Row:
    def __init__(self, alloc_id: str) -> None:
        self.id = alloc_id
        self.feed_ids = ["F1", "F2"]
        self.schedule_run_id = "R1"
        self.task_id = "T1"


def test_remember_recall_forget_and_the_bound() -> None:
    memory = FactsMemory(max_entries=3)
    memory.remember([_Row(f"A{i}") for i in range(5)])
    assert len(memory) == 3
    assert memory.recall("A0") is None and memory.recall("A1") is None  # oldest went first
    facts = memory.recall("A4")
    assert facts is not None and facts.feed_ids == ("F1", "F2") and facts.schedule_run_id == "R1"
    memory.forget("A4", "A3", "unknown")
    assert memory.recall("A4") is None and memory.recall("A3") is None
    assert memory.recall("A2") is not None


def test_each_store_owns_its_memory(store: Store, sqlite_url: str) -> None:
    other = Store.from_url(sqlite_url)
    try:
        assert other.facts is not store.facts
        assert store.backend.facts is store.facts
    finally:
        other.dispose()


@pytest.mark.postgres
def test_release_and_requeue_forget(pg_store: Store, clock: Any, settings: Any) -> None:
    node, _, claimed = claimed_run(pg_store, clock.now(), settings, 2)
    (released, epoch_r, _), (expired, _, _) = claimed
    assert pg_store.facts.recall(released) is not None
    assert pg_store.facts.recall(expired) is not None
    with pg_store.session() as s:
        alloc_repo.set_status(s, clock.now(), s.merge(node), TaskStatusIn(
            allocation_id=released, status="released", epoch=epoch_r), settings)
    assert pg_store.facts.recall(released) is None
    clock.advance(settings.parent.lease_ttl + 1)
    with pg_store.session() as s:
        assert reap_expired(s, clock.now(), settings)["requeued"] == 1
    assert pg_store.facts.recall(expired) is None


@pytest.mark.postgres
def test_a_requeued_allocation_claimed_elsewhere_takes_the_ordinary_path(
        pg_store: Store, pg_url: str, clock: Any, settings: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Process A claims, the lease expires and A's reaper requeues it; process B hands it to
    another node, whose upload then reaches A. A must not use what it remembered from its
    own claim (its one-statement path is stubbed to fail here)."""
    node, _, claimed = claimed_run(pg_store, clock.now(), settings, 1)
    alloc_id, _, feed = claimed[0]
    clock.advance(settings.parent.lease_ttl + 1)
    with pg_store.session() as s:
        assert reap_expired(s, clock.now(), settings)["requeued"] == 1
    process_b = Store.from_url(pg_url)
    try:
        other = make_node(process_b, clock.now(), "child-b")
        with process_b.session() as s:
            again = alloc_repo.claim(s, clock.now(), s.merge(other), settings)
        assert [a.id for a in again] == [alloc_id]

        def stale(*args: Any, **kw: Any) -> Any:
            raise AssertionError("facts remembered before the requeue were used")

        monkeypatch.setattr(pg_dialect._ONE_STATEMENT, "upload", stale)
        with pg_store.session() as s:  # process A answers the new holder
            answer = alloc_repo.upload_articles(s, clock.now(), s.merge(other), UploadArticlesIn(
                allocation_id=alloc_id, epoch=again[0].epoch,
                articles=[ArticleIn(title="t", url="https://e/1", feed_id=feed)]), settings)
        assert answer == (1, 1)
    finally:
        process_b.dispose()
