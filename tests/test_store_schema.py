import warnings
from datetime import UTC, datetime, timedelta

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, insert, inspect, select

from cascade_cli.store import migrate
from cascade_cli.store.engine import Store
from cascade_cli.store.models import NAME_CASE_INDEX_DIALECTS, Article, Base
from cascade_cli.store.retention import purge


def test_migration_creates_every_table_on_each_database(any_store):
    names = set(inspect(any_store.engine).get_table_names())
    for table in ("nodes", "feeds", "message_tasks", "schedule_runs", "allocations", "articles",
                  "feed_results", "events", "auth_nonces", "admin_tokens", "deliveries"):
        assert table in names
    assert migrate.current_revision(any_store) == migrate.head_revision()
    # running it again is safe
    before, after = migrate.upgrade(any_store)
    assert before == after == migrate.head_revision()


def test_migrations_build_exactly_the_models(any_store):
    """What ``cascade init`` builds is what the code declares: no table, column, key or
    index differs (a model changed without its migration fails here)."""
    dialect = any_store.engine.dialect.name

    def built_here(obj, name, type_, reflected, compare_to):  # noqa: ANN001, ANN202
        # uq_nodes_name_lower exists only where the model's DDL condition builds it.
        return not (type_ == "index" and name == "uq_nodes_name_lower"
                    and dialect not in NAME_CASE_INDEX_DIALECTS)

    with any_store.engine.connect() as conn, warnings.catch_warnings():
        # SQLite cannot reflect expression indexes: alembic and SQLAlchemy skip
        # uq_nodes_name_lower there with a warning (test_node_names_are_case_insensitive_in_the_
        # database checks its DDL instead).
        warnings.filterwarnings("ignore", message=".*expression-based index uq_nodes_name_lower")
        warnings.filterwarnings("ignore",
                                message=".*expression-based index 'uq_nodes_name_lower'")
        diffs = compare_metadata(MigrationContext.configure(
            conn, opts={"compare_type": False, "include_object": built_here}), Base.metadata)
    assert diffs == []
    # Autogenerate does not compare primary keys.
    found = inspect(any_store.engine)
    for table in Base.metadata.sorted_tables:
        assert found.get_pk_constraint(table.name)["constrained_columns"] == [
            c.name for c in table.primary_key.columns], table.name


def test_0002_keys_articles_by_feed_and_keeps_them(any_db_url):
    store = Store.from_url(any_db_url)
    try:
        assert migrate.upgrade(store, "0001") == (None, "0001")
        when = datetime(2026, 11, 1, 12, 0)
        rows = [{"id": f"{n:064x}", "feed_id": f"F{n % 3}", "title": f"t{n}", "url": f"u{n}",
                 "created_at": when} for n in range(7)]
        with store.engine.begin() as conn:
            conn.execute(insert(Article.__table__), rows)
        assert migrate.upgrade(store) == ("0001", migrate.head_revision())
        assert inspect(store.engine).get_pk_constraint("articles")["constrained_columns"] == [
            "feed_id", "id"]
        with store.session() as s:
            kept = s.execute(select(Article.feed_id, Article.id, Article.title)
                             .order_by(Article.title)).all()
        assert kept == [(r["feed_id"], r["id"], r["title"]) for r in rows]
        # The new key pages through the articles: 7 across 3 feeds, 2 at a time.
        report = purge(store, when + timedelta(days=40), timedelta(days=30), articles=True,
                       batch=2)
        assert report.counts["articles"] == 7
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(Article)) == 0
    finally:
        store.dispose()


def test_node_index_holds_only_active_allocations(any_store):
    """``ix_alloc_node_status`` indexes only claimed and executing allocations where the
    database has partial indexes (SQLite, PostgreSQL), and the capacity count of every claim
    is planned on it: its condition names the states as literals. Bound as parameters, the
    planners could not use the index, and the count would read the node's whole history."""
    from sqlalchemy import text

    from cascade_cli.store.dialects.base import RUNNING as _RUNNING

    dialect = any_store.engine.dialect
    sql = _RUNNING.plan(dialect).sql
    with any_store.engine.connect() as conn:
        if dialect.name == "sqlite":
            ddl = conn.scalar(text("SELECT sql FROM sqlite_master "
                                   "WHERE name = 'ix_alloc_node_status'"))
            assert "WHERE status IN ('claimed', 'executing')" in ddl
            plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + sql, ("node-1",)))
        elif dialect.name == "postgresql":
            ddl = conn.scalar(text("SELECT indexdef FROM pg_indexes "
                                   "WHERE indexname = 'ix_alloc_node_status'"))
            assert "WHERE ((status)::text = ANY" in ddl, ddl
            conn.exec_driver_sql("SET enable_seqscan = off")  # an empty table: scans are free
            plan = " ".join(row[0] for row in conn.exec_driver_sql(
                "EXPLAIN " + sql, {"b_node": "node-1"}))
        else:  # MySQL/MariaDB: no partial indexes, the full one
            columns = [row[4] for row in conn.exec_driver_sql(
                "SHOW INDEX FROM allocations WHERE Key_name = 'ix_alloc_node_status'")]
            assert columns == ["node_id", "status"]
            return
    assert "ix_alloc_node_status" in plan, plan


def test_0007_marks_runs_finished_before_it_as_notified(any_db_url):
    """Runs that finished before 0007 had their notifications queued when they finished: the
    notifier must not queue them again; a running one is left for the notifier."""
    from cascade_cli.store.models import MessageTask, ScheduleRun
    from cascade_cli.store.runs import unnotified_runs

    store = Store.from_url(any_db_url)
    try:
        assert migrate.upgrade(store, "0006") == (None, "0006")
        when = datetime(2026, 11, 1, 12, 0)
        with store.engine.begin() as conn:
            conn.execute(insert(MessageTask.__table__), [{
                "id": "t1", "name": "t1", "mps_id": [], "status": 1, "message_type": 0,
                "overlap_policy": "skip", "misfire_policy": "skip", "jitter": 0,
                "created_at": when, "updated_at": when}])
            conn.execute(insert(ScheduleRun.__table__), [
                {"id": f"r{n}", "task_id": "t1", "scheduled_for": when + timedelta(minutes=n),
                 "trigger": "manual", "status": status, "allocation_count": 0,
                 "open_allocations": 0, "created_at": when, "finished_at": finished}
                for n, (status, finished) in enumerate([
                    ("finished", when + timedelta(hours=1)), ("finished", None),
                    ("running", None)])])
        assert migrate.upgrade(store) == ("0006", migrate.head_revision())
        with store.session() as s:
            marks = dict(s.execute(select(ScheduleRun.id, ScheduleRun.notified_at)).all())
            utc = when.replace(tzinfo=UTC)
            assert marks == {"r0": utc + timedelta(hours=1), "r1": utc, "r2": None}
            assert unnotified_runs(s) == []
        assert migrate.downgrade(store, "0006") == (migrate.head_revision(), "0006")
        assert migrate.upgrade(store) == ("0006", migrate.head_revision())
    finally:
        store.dispose()
