from sqlalchemy import inspect

from cascade_cli.store import migrate


def test_migration_creates_every_table_on_each_database(any_store):
    names = set(inspect(any_store.engine).get_table_names())
    for table in ("nodes", "feeds", "message_tasks", "schedule_runs", "allocations", "articles",
                  "feed_results", "events", "auth_nonces", "admin_tokens", "deliveries"):
        assert table in names
    assert migrate.current_revision(any_store) == migrate.head_revision()
    # running it again is safe
    before, after = migrate.upgrade(any_store)
    assert before == after == migrate.head_revision()
