"""Prepared statements give what connection.execute gives (rows, types, row counts, wrapped
errors), on every database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest
from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from cascade_cli.store.models import Event, Node
from cascade_cli.store.prepared import Prepared

_N = cast(Table, Node.__table__)
_E = cast(Table, Event.__table__)
T0 = datetime(2026, 5, 1, 8, 0, 0, 123456, tzinfo=UTC)


def _node(i: int) -> dict[str, Any]:
    return {"id": f"n{i}", "name": f"node-{i}", "description": "", "api_key": f"CN{i:030d}",
            "secret_hash": "h", "enabled": i % 2 == 0, "legacy": False, "max_capacity": i,
            "last_heartbeat_at": T0, "created_at": T0, "updated_at": T0}


def test_prepared_matches_core_execution(any_store) -> None:
    by_ids = select(*_N.c).where(_N.c.name.in_(["node-1", "node-2", "node-9"]),
                                 _N.c.max_capacity >= bindparam("b_min")).order_by(_N.c.id)
    bump = (update(_N).where(_N.c.id == bindparam("b_id"))
            .values(max_capacity=_N.c.max_capacity + 10, last_heartbeat_at=bindparam("b_now")))
    with any_store.session() as s:
        conn = s.connection()
        conn.execute(insert(_N), [_node(i) for i in range(1, 4)])
        expected = conn.execute(by_ids, {"b_min": 2}).all()
        got = Prepared(by_ids).execute(conn, {"b_min": 2}).all()
        assert [tuple(r) for r in got] == [tuple(r) for r in expected]
        assert got[0].last_heartbeat_at == T0  # UTCDateTime: aware UTC, microseconds kept
        assert got[0].enabled is True and isinstance(got[0].enabled, bool)
        later = datetime(2026, 5, 2, tzinfo=UTC)
        assert Prepared(bump).execute(conn, {"b_id": "n3", "b_now": later}).rowcount == 1
        assert Prepared(bump).execute(conn, {"b_id": "nope", "b_now": later}).rowcount == 0
        row = conn.execute(select(_N.c.max_capacity, _N.c.last_heartbeat_at)
                           .where(_N.c.id == "n3")).one()
        assert (row.max_capacity, row.last_heartbeat_at) == (13, later)


def test_prepared_insert_with_column_keys_and_json(any_store) -> None:
    ins = Prepared(insert(_E), column_keys=["operation", "direction", "status", "count",
                                            "detail", "created_at"])
    with any_store.session() as s:
        conn = s.connection()
        ins.execute(conn, {"operation": "x", "direction": "internal", "status": "ok",
                           "count": 2, "detail": {"k": ["中文", 1]}, "created_at": T0})
        row = conn.execute(select(_E.c.detail, _E.c.count, _E.c.created_at)).one()
    assert (row.detail, row.count, row.created_at) == ({"k": ["中文", 1]}, 2, T0)


def test_prepared_errors_are_sqlalchemy_errors(any_store) -> None:
    with pytest.raises(IntegrityError), any_store.session() as s:
        conn = s.connection()
        stmt = Prepared(insert(_N), column_keys=list(_node(1)))
        stmt.execute(conn, _node(1))
        stmt.execute(conn, _node(1))  # same primary key


def test_runtime_in_lists_are_refused() -> None:
    from sqlalchemy.dialects import sqlite

    stmt = Prepared(select(_N.c.id).where(_N.c.id.in_(bindparam("ids", expanding=True))))
    with pytest.raises(TypeError, match="no constant value"):
        stmt.plan(sqlite.dialect())


def test_package_feeds_any_list_length(any_store, clock) -> None:
    from cascade_cli.protocol import FeedIn
    from cascade_cli.store.feeds import create_feed, package_feeds

    with any_store.session() as s:
        for i in range(530):
            create_feed(s, clock.now(), FeedIn(id=f"P{i}", mp_name=f"公众号 {i}",
                                               url=f"https://example.com/{i}.xml"))
    with any_store.session() as s:
        for n in (0, 1, 2, 8, 9, 64, 65, 512, 513, 530):
            ids = [f"P{i}" for i in range(n)] + ["missing"]
            got = package_feeds(s, ids)
            assert sorted(got) == sorted(ids[:-1]), n
        one = package_feeds(s, ["P7"])["P7"]
        assert one["mp_name"] == "公众号 7" and one["url"] == "https://example.com/7.xml"
        assert set(one) == {"id", "faker_id", "mp_name", "mp_cover", "mp_intro", "status",
                            "url", "kind", "etag", "last_modified"}


def test_missing_parameters_are_errors_not_nulls(store) -> None:
    stmt = Prepared(select(_N.c.id).where(_N.c.id == bindparam("b_id")))
    with store.session() as s:
        with pytest.raises(TypeError, match="b_id"):
            stmt.execute(s.connection(), {})
        ins = Prepared(insert(_E), column_keys=["operation", "direction", "status", "count",
                                                "detail", "created_at"])
        with pytest.raises(TypeError, match="detail"):
            ins.execute(s.connection(), {"operation": "x", "direction": "internal",
                                         "status": "ok", "count": 0, "created_at": T0})


def test_inserts_must_list_defaulted_columns() -> None:
    from sqlalchemy.dialects import sqlite

    # events.direction/status/count have Python-side defaults that Prepared cannot apply.
    with pytest.raises(TypeError, match="direction"):
        Prepared(insert(_E), column_keys=["operation", "created_at"]).plan(sqlite.dialect())


def test_executemany_converts_each_rows_own_values(any_store) -> None:
    """Rows sharing one object reuse its conversion; every row still stores its own value
    (shared, alternating, equal-but-distinct, another zone, JSON values and None)."""
    ins = Prepared(insert(_E), column_keys=["operation", "direction", "status", "count",
                                            "detail", "created_at"])
    shared = {"k": 1}
    other_zone = datetime(2026, 5, 1, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    times = [T0, T0, T0 + timedelta(seconds=2), T0 + timedelta(seconds=1), T0, other_zone,
             T0.replace(), T0]
    details = [shared, shared, {"k": 2}, shared, None, shared, {"k": 1}, shared]
    rows = [{"operation": f"op{i}", "direction": "internal", "status": "ok", "count": i,
             "detail": d, "created_at": t} for i, (t, d) in enumerate(zip(times, details))]
    with any_store.session() as s:
        conn = s.connection()
        ins.executemany(conn, rows)
        got = conn.execute(select(_E.c.count, _E.c.created_at, _E.c.detail)
                           .order_by(_E.c.count)).all()
    expected_times = [t.astimezone(UTC) for t in times]
    assert [(r.count, r.created_at, r.detail) for r in got] == list(
        zip(range(len(rows)), expected_times, details))
    assert expected_times[5] == T0  # 10:00 at +02:00 is T0
