"""Issue 16 point 6: node names differing only by case (n1, N1) are one name in the database
too (migration 0006), so a race past the application's check, or an importer, cannot store
both; a database that already holds such names stops the upgrade with their names and fix."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Table, create_engine, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from cascade_cli.errors import Conflict, StoreError
from cascade_cli.store import migrate, nodes
from cascade_cli.store.engine import Store
from cascade_cli.store.models import Node
from tests.dbservers import MYSQL_ADMIN_URL, fresh_database
from tests.foundation.conftest import clean_env, cli, parent_dir  # noqa: F401

NODES: Table = Node.__table__  # type: ignore[assignment]
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _row(n: int, name: str) -> dict[str, object]:
    """A node row as 0005 and later store it (raw: no application check on the way)."""
    return {"id": f"node{n:028d}", "name": name, "description": "", "api_key": f"key-{n:08d}",
            "enabled": True, "max_capacity": 2, "legacy": False,
            "created_at": NOW.replace(minute=n), "updated_at": NOW}


def _insert(store: Store, *names: str) -> None:
    with store.engine.begin() as conn:
        for n, name in enumerate(names, 1):
            conn.execute(insert(NODES), _row(n, name))


def test_database_refuses_a_raw_case_duplicate(any_store: Store) -> None:
    """SQLite and PostgreSQL by the index on lower(name); MySQL/MariaDB by the collation of
    the unique index on name."""
    _insert(any_store, "edge-1")
    with pytest.raises(IntegrityError), any_store.engine.begin() as conn:
        conn.execute(insert(NODES), _row(2, "Edge-1"))
    with any_store.engine.begin() as conn:
        conn.execute(insert(NODES), _row(3, "edge-2"))  # other names still go in


def test_a_race_past_the_check_is_refused_by_the_index(store: Store,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Two parents both pass ``name_taken`` before either commits: the index answers."""
    with store.session() as s:
        nodes.create_node(s, NOW, "edge-1")
    monkeypatch.setattr(nodes, "name_taken", lambda _session, _name: None)
    with pytest.raises(Conflict, match="already exists"), store.session() as s:
        nodes.create_node(s, NOW, "EDGE-1")
    with pytest.raises(Conflict, match="already exists"), store.session() as s:
        nodes.import_legacy_node(s, NOW, name="Edge-1", api_key="legacy-key-1",
                                 sha256_hex="a" * 64)
    with store.session() as s:
        assert s.scalars(select(Node.name)).all() == ["edge-1"]


def test_import_legacy_node_refuses_a_case_duplicate_by_name(store: Store) -> None:
    with store.session() as s:
        nodes.create_node(s, NOW, "edge-1")
    with pytest.raises(Conflict, match="'edge-1': names differing only by case"), \
            store.session() as s:
        nodes.import_legacy_node(s, NOW, name="Edge-1", api_key="legacy-key-1",
                                 sha256_hex="a" * 64)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def indexed_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The databases that get the lower(name) index."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'case.db'}"
        return
    with fresh_database("postgres") as url:
        yield url


def _apply_hint(store: Store, hint: str) -> None:
    """Run the UPDATE statements the error's hint gives, verbatim."""
    with store.engine.begin() as conn:
        for statement in re.findall(r"UPDATE nodes SET [^;]+;", hint):
            conn.execute(text(statement))


def test_migration_stops_on_case_duplicates_with_names_and_fix(indexed_db_url: str) -> None:
    store = Store.from_url(indexed_db_url)
    try:
        migrate.upgrade(store, "0005")
        _insert(store, "edge-1", "Edge-1", "EDGE-1", "solo", "b", "B")
        with pytest.raises(StoreError) as caught:
            migrate.upgrade(store)
        err = caught.value
        assert "names differ only by case: 'b', 'B'; 'edge-1', 'Edge-1', 'EDGE-1'" in str(err)
        assert err.hint is not None and "cascade nodes delete NAME" in err.hint
        assert "UPDATE nodes SET name = 'Edge-1-2' WHERE name = 'Edge-1';" in err.hint
        assert migrate.current_revision(store) == "0005"  # nothing changed
        assert "uq_nodes_name_lower" not in {i["name"] for i in inspect(store.engine)
                                              .get_indexes("nodes")}

        _apply_hint(store, err.hint)  # the fix as given works
        assert migrate.upgrade(store) == ("0005", migrate.head_revision())
        with store.engine.connect() as conn:
            names = set(conn.scalars(select(NODES.c.name)))
        assert names == {"edge-1", "Edge-1-2", "EDGE-1-3", "solo", "b", "B-2"}
    finally:
        store.dispose()


def test_cascade_init_names_the_duplicates_in_one_line(cli, parent_dir: Path) -> None:  # noqa: F811
    """The real path: ``cascade init`` on a database holding n1 and N1."""
    (parent_dir / "state").mkdir(exist_ok=True)
    store = Store.from_url(f"sqlite:///{parent_dir / 'state' / 'cascade.db'}")
    try:
        migrate.upgrade(store, "0005")
        _insert(store, "n1", "N1")
    finally:
        store.dispose()
    r = cli("init")
    assert r.exit_code != 0
    assert "Traceback" not in r.output and "IntegrityError" not in r.output
    assert "names differ only by case: 'n1', 'N1'" in r.output, r.output
    assert "cascade init" in r.output


def test_upgrade_downgrade_upgrade(any_db_url: str) -> None:
    store = Store.from_url(any_db_url)
    try:
        migrate.upgrade(store)
        assert migrate.downgrade(store, "0004") == (migrate.head_revision(), "0004")
        found = inspect(store.engine)
        assert "legacy" not in {c["name"] for c in found.get_columns("nodes")}
        assert "uq_nodes_name_lower" not in {i["name"] for i in found.get_indexes("nodes")}
        assert migrate.upgrade(store) == ("0004", migrate.head_revision())
        _insert(store, "n1")
        with pytest.raises(IntegrityError), store.engine.begin() as conn:
            conn.execute(insert(NODES), _row(2, "N1"))
        with pytest.raises(StoreError, match="schema downgrade to 'nope' failed"):
            migrate.downgrade(store, "nope")
    finally:
        store.dispose()


@pytest.mark.mysql
def test_mysql_case_sensitive_collation_moves_to_case_insensitive() -> None:
    """A MySQL/MariaDB database an operator created with a case-sensitive collation: the
    migration refuses existing duplicates, then gives the column a _ci collation."""
    with fresh_database("mysql") as url:
        admin = create_engine(MYSQL_ADMIN_URL)
        with admin.begin() as conn:
            conn.execute(text(f"ALTER DATABASE `{url.rsplit('/', 1)[1]}` "
                              "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
        admin.dispose()
        store = Store.from_url(url)
        try:
            migrate.upgrade(store, "0004")  # from the last release: 0005 runs first
            with store.engine.begin() as conn:
                for n, name in enumerate(("n1", "N1"), 1):
                    row = _row(n, name)
                    del row["legacy"]  # 0005 adds it
                    conn.execute(text("INSERT INTO nodes (id, name, description, api_key, "
                                      "enabled, max_capacity, created_at, updated_at) VALUES "
                                      "(:id, :name, '', :api_key, 1, 2, :created_at, "
                                      ":updated_at)"), row)
            with pytest.raises(StoreError, match="'n1', 'N1'") as caught:
                migrate.upgrade(store)
            # MySQL committed 0005's column at once: its revision is recorded with it, so
            # the upgrade resumes once the names are fixed.
            assert migrate.current_revision(store) == "0005"
            assert caught.value.hint is not None
            _apply_hint(store, caught.value.hint)
            assert migrate.upgrade(store) == ("0005", migrate.head_revision())
            with store.engine.connect() as conn:
                collation = conn.scalar(text(
                    "SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE "
                    "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'nodes' "
                    "AND COLUMN_NAME = 'name'"))
            assert collation == "utf8mb4_general_ci"
            with pytest.raises(IntegrityError), store.engine.begin() as conn:
                conn.execute(insert(NODES), _row(3, "n2"))
                conn.execute(insert(NODES), _row(4, "N2"))
        finally:
            store.dispose()
