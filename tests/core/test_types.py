"""``UTCDateTime``: one behaviour on every database, and on SQLite the exact text SQLAlchemy's
own DATETIME writes (rows written before and after the fast conversion compare alike)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select, text
from sqlalchemy.dialects.sqlite.base import DATETIME

from cascade_cli.store.types import UTCDateTime

VALUES = [datetime(2026, 1, 2, 3, 4, 5), datetime(2026, 1, 2, 3, 4, 5, 7),
          datetime(999, 12, 31, 23, 59, 59, 999999),
          datetime(2026, 1, 2, 3, 4, 5, 42, tzinfo=UTC), datetime(1000, 1, 1, tzinfo=UTC),
          datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone(timedelta(hours=8))),
          datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5, minutes=-30)))]


def test_sqlite_text_is_sqlalchemys_own() -> None:
    dialect = create_engine("sqlite://").dialect
    ours = UTCDateTime().bind_processor(dialect)
    theirs = DATETIME().bind_processor(dialect)
    assert ours is not None and theirs is not None
    for value in VALUES:
        naive_utc = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
        assert ours(value) == theirs(naive_utc)
    assert ours(None) is None
    with pytest.raises(TypeError):
        ours("2026-01-02 03:04:05")


def test_round_trip_and_comparison_on_any_database(any_store) -> None:
    table = Table("utc_probe", MetaData(), Column("id", Integer, primary_key=True, autoincrement=False),
                  Column("at", UTCDateTime()))
    table.create(any_store.engine)
    try:
        with any_store.session() as s:
            conn = s.connection()
            conn.execute(insert(table), [{"id": i, "at": v} for i, v in enumerate(VALUES, 1)]
                         + [{"id": 99, "at": None}])
            got = dict(conn.execute(select(table.c.id, table.c.at)).all())
            cutoff = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
            later = set(conn.scalars(select(table.c.id).where(table.c.at > cutoff)))
    finally:
        table.drop(any_store.engine)
    for i, value in enumerate(VALUES, 1):
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value
        assert got[i] == aware and got[i].tzinfo == UTC
    assert got[99] is None
    assert later == {i for i, v in enumerate(VALUES, 1)
                     if (v.replace(tzinfo=UTC) if v.tzinfo is None else v) > cutoff}


def test_sqlite_reads_text_written_without_microseconds() -> None:
    engine = create_engine("sqlite://")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True, autoincrement=False),
                  Column("at", UTCDateTime()))
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t (id, at) VALUES (1, '2026-01-02 03:04:05')"))
        assert conn.scalar(select(table.c.at)) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
