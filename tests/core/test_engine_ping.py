"""A pooled connection that the server dropped while it sat idle is replaced unnoticed; one
that was just in use is not pinged (no extra round trip per transaction under load)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import event, text

from cascade_cli.store import engine as engine_mod
from cascade_cli.store.engine import Store
from tests.dbservers import fresh_database


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres),
                        pytest.param("mysql", marks=pytest.mark.mysql)])
def server_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    with fresh_database(request.param) as url:
        store = Store.from_url(url, pool_size=1)
        yield store
        store.dispose()


def _backend_id(store: Store) -> int:
    sql = "SELECT pg_backend_pid()" if store.dialect == "postgresql" else "SELECT CONNECTION_ID()"
    with store.session() as s:
        return int(s.execute(text(sql)).scalar_one())


def _kill(store: Store, backend: int) -> None:
    sql = (f"SELECT pg_terminate_backend({backend})" if store.dialect == "postgresql"
           else f"KILL {backend}")
    other = Store.from_url(str(store.engine.url.render_as_string(hide_password=False)))
    try:
        with other.engine.connect() as c:
            c.execute(text(sql))
            c.commit()
    finally:
        other.dispose()


def _count_pings(store: Store) -> list[int]:
    pings = [0]
    original = store.engine.dialect.do_ping

    def counting(dbapi_conn):  # type: ignore[no-untyped-def]
        pings[0] += 1
        return original(dbapi_conn)

    store.engine.dialect.do_ping = counting  # type: ignore[method-assign]
    return pings


def test_busy_connections_are_not_pinged(server_store: Store) -> None:
    pings = _count_pings(server_store)
    for _ in range(5):
        _backend_id(server_store)
    assert pings[0] == 0


def test_a_connection_dropped_while_idle_is_replaced(server_store: Store,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pings = _count_pings(server_store)
    first = _backend_id(server_store)
    _kill(server_store, first)
    # As if the connection had sat in the pool past the idle limit.
    monkeypatch.setattr(engine_mod, "PING_AFTER_IDLE", 0.0)
    replaced: list[object] = []
    event.listen(server_store.engine, "connect", lambda *a: replaced.append(a))
    second = _backend_id(server_store)  # no error reaches the caller
    assert pings[0] >= 1 and replaced and second != first
