"""nodes.read_ahead: a batch of node requests looks its nodes up in one query, and each
request's own lookup is then answered exactly as the database would answer it."""

from __future__ import annotations

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
