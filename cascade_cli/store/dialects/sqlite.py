"""SQLite: ``UPDATE ... RETURNING`` (3.35+), ``INSERT ... ON CONFLICT DO NOTHING`` counted by
the driver's row count, and no row locks (every transaction holds the one write lock from
``BEGIN IMMEDIATE``, see ``store.engine``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.dialects import sqlite

from cascade_cli.protocol import ArticleIn
from cascade_cli.store.dialects.base import (
    ADD_NEW,
    ALLOC,
    ALLOCATION_COLUMNS,
    ARTICLES,
    CANDIDATES,
    CLAIMED_VALUES,
    RESULT_KEYS,
    RESULTS,
    TASK_COLUMNS,
    A,
    AllocationRow,
    ClaimedRow,
    StepwiseCompletion,
    article_values,
    free_capacity,
    read_unlocked,
    )
from cascade_cli.store.prepared import Prepared

# Without ``status = 'pending'`` again on the outer rows: the whole statement runs under
# SQLite's single write lock, so the candidates cannot change underneath it, and with the
# condition its planner walked every pending row of the status index and tested each
# against the few picked ids (a claim cost grew with the backlog) instead of looking the
# ids up. SQLite's scalar min()/max() take several arguments.
_PICKED = CANDIDATES.with_only_columns(A.id).limit(free_capacity(func.max, func.min))
_CLAIM = Prepared(update(ALLOC).where(A.id.in_(_PICKED.scalar_subquery()))
                  .values(CLAIMED_VALUES).returning(*ALLOCATION_COLUMNS, *TASK_COLUMNS),
                  row=ClaimedRow)

_KEY = ["feed_id", "id"]  # the primary key (see models.Article)
_INSERT_NEW = Prepared(sqlite.insert(ARTICLES).on_conflict_do_nothing(index_elements=_KEY),
                       column_keys=[c.name for c in ARTICLES.c])

# One row per feed result, its new-article count counted by the INSERT itself (articles this
# allocation stored first for the feed): no separate read before the insert.
_INSERT_RESULT = Prepared(insert(RESULTS).from_select(
    [*RESULT_KEYS, "new_article_count"],
    select(*[bindparam(f"b_{k}", type_=RESULTS.c[k].type) for k in RESULT_KEYS],
           select(func.count()).select_from(ARTICLES).where(
               ARTICLES.c.allocation_id == bindparam("b_allocation_id"),
               ARTICLES.c.feed_id == bindparam("b_feed_id")).scalar_subquery())))



class SqliteDialect(StepwiseCompletion):
    name = "sqlite"
    claiming = _CLAIM

    def read_current(self, conn: Connection, alloc_id: str) -> AllocationRow | None:
        return read_unlocked(conn, alloc_id)  # no row locks: the write lock is held already

    def merge_articles(self, conn: Connection, unique: dict[str, tuple[str, ArticleIn]],
                       now: datetime, shared: dict[str, Any]) -> int:
        # SQLite sums the rows each execution inserted: a skipped conflict counts 0.
        new = _INSERT_NEW.executemany(conn, article_values(unique, now, shared))
        if new and shared["allocation_id"] is not None:
            ADD_NEW.execute(conn, {"b_id": shared["allocation_id"], "b_new": new})
        return new

    def insert_results(self, conn: Connection, rows: list[dict[str, Any]],
                       allocation_id: str) -> None:
        # in process: each row's new count is counted by its own INSERT
        _INSERT_RESULT.executemany(conn, [{f"b_{k}": v for k, v in row.items()} for row in rows])
