"""nodes.read_ahead: a batch of node requests looks its nodes up in one query, and each
request's own lookup is then answered exactly as the database would answer it."""

from __future__ import annotations

import pytest

from cascade_cli.auth import generate_api_key
from cascade_cli.store import nodes as node_repo
from tests.core.helpers import make_node


def test_read_ahead_answers_lookups_like_the_database(any_store, clock) -> None:
    now = clock.now()
    made = [make_node(any_store, now, f"n{i}") for i in range(10)]  # > 8: the larger list
    late = make_node(any_store, now, "late")  # not read ahead
    unknown = generate_api_key()  # well-formed, belongs to no node
    with any_store.session() as s:
        expected = {n.api_key: node_repo.find_row_by_key(s, n.api_key) for n in made}
    with any_store.session() as s:
        node_repo.read_ahead(s, [n.api_key for n in made] + [unknown, "junk", made[0].api_key])
        # every lookup now comes from the read-ahead: prove it by failing any query
        real_connection = s.connection
        s.connection = lambda *a, **k: (_ for _ in ()).throw(AssertionError("queried"))
        try:
            for key, row in expected.items():
                assert node_repo.find_row_by_key(s, key) == row
                assert node_repo.get_row(s, row.id) == row
            assert node_repo.find_row_by_key(s, unknown) is None
            assert node_repo.find_row_by_key(s, "junk") is None
        finally:
            s.connection = real_connection
        # a node outside the read-ahead is still looked up
        assert node_repo.get_row(s, late.id).api_key == late.api_key


def test_a_node_changed_meanwhile_is_caught_before_the_batch_commits(any_store, clock) -> None:
    """PostgreSQL and MySQL read committed data afresh at every statement: an admin disabling
    a node while a batch runs would otherwise go unseen by the batch's later requests. The
    verifier reads the nodes again before the commit. On SQLite the batch holds the write
    lock, so nothing can change meanwhile and there is no verifier."""
    from sqlalchemy import update

    from cascade_cli.store.models import Node

    now = clock.now()
    node = make_node(any_store, now, "watched")
    other = make_node(any_store, now, "bystander")
    with any_store.session() as s:
        verify = node_repo.read_ahead(s, [node.api_key, other.api_key])
        if any_store.dialect == "sqlite":
            assert verify is None
            return
        assert verify is not None
        verify(s)  # nothing changed: passes
        with any_store.session() as admin:  # another connection, committed at once
            admin.execute(update(Node).where(Node.id == node.id).values(enabled=False))
        with pytest.raises(node_repo.StaleReadAhead):
            verify(s)


def test_lookup_by_key_is_exact(any_store, clock) -> None:
    """MySQL/MariaDB compare strings without regard to case: a key sent with other capitals
    is no key, alone or read ahead."""
    node = make_node(any_store, clock.now(), "exact")
    wrong = node.api_key[:2] + node.api_key[2:].swapcase()
    with any_store.session() as s:
        assert node_repo.find_row_by_key(s, wrong) is None
        node_repo.read_ahead(s, [wrong])
        assert node_repo.find_row_by_key(s, wrong) is None
