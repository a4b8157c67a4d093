"""MySQL/MariaDB: no ``UPDATE ... RETURNING``. A claim is a conditional UPDATE per candidate
(read ``FOR UPDATE SKIP LOCKED``), checked by row count, and the claimed rows are read back;
an owner write is read back after its UPDATE; articles go in with ``INSERT IGNORE``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from cascade_cli.protocol import ArticleIn
from cascade_cli.store.dialects.base import (
    ADD_NEW,
    ALLOC,
    ARTICLES,
    CANDIDATES,
    CLAIMED_VALUES,
    RESULT_KEYS,
    RESULTS,
    RUNNING,
    A,
    ClaimedRow,
    OwnerWrite,
    R,
    StepwiseCompletion,
    article_values,
    columns_of,
    rows_by_id,
)
from cascade_cli.store.models import PENDING
from cascade_cli.store.prepared import Prepared

_CANDIDATES = Prepared(CANDIDATES.with_for_update(skip_locked=True, of=ALLOC))
_CLAIM_ONE = Prepared(update(ALLOC).where(A.id == bindparam("b_id"), A.status == PENDING,
                                          A.epoch == bindparam("b_epoch"))
                      .values(CLAIMED_VALUES))

# The driver sends an executemany of a plain INSERT ... VALUES as one multi-row INSERT, but
# runs an INSERT ... SELECT once per row (a round trip each): the new counts are read first,
# in one query, instead.
_NEW_BY_FEED = Prepared(select(ARTICLES.c.feed_id, func.count())
                        .where(ARTICLES.c.allocation_id == bindparam("b_id"))
                        .group_by(ARTICLES.c.feed_id))
_INSERT_RESULT_ROWS = Prepared(insert(RESULTS), column_keys=[*RESULT_KEYS, "new_article_count"])


_READ_BACK: dict[type[Any], Prepared] = {}


def _read_back(row: type[Any]) -> Prepared:
    stmt = _READ_BACK.get(row)
    if stmt is None:
        stmt = _READ_BACK[row] = Prepared(select(*columns_of(row))
                                          .where(A.id == bindparam("b_id")), row=row)
    return stmt



class MysqlDialect(StepwiseCompletion):
    name = "mysql"

    def claim(self, session: Session, params: dict[str, Any]) -> list[ClaimedRow]:
        conn = session.connection()
        running = int(RUNNING.execute(conn, params).scalar() or 0)
        want = min(params["b_want"], params["b_capacity"] - running)
        if want <= 0:
            return []
        params = {**params, "b_want": want}
        claimed_ids: list[str] = []
        for alloc_id, seen_epoch in _CANDIDATES.execute(conn, params).all():
            result = _CLAIM_ONE.execute(conn, {**params, "b_id": alloc_id, "b_epoch": seen_epoch})
            if result.rowcount == 1:
                claimed_ids.append(alloc_id)
        # Claims are counted by metrics and visible on the allocation (node, claimed_at,
        # epoch); an event row per claim would only grow the log.
        return rows_by_id(conn, claimed_ids) if claimed_ids else []

    def owner_write(self, conn: Connection, write: OwnerWrite, with_epoch: bool,
                    row: type[R], params: dict[str, Any]) -> R | None:
        # The row count is of matched rows (the driver's FOUND_ROWS flag), and our UPDATE
        # holds the row lock, so the read-back is ours.
        if write.prepared(with_epoch, None).execute(conn, params).rowcount != 1:
            return None
        first: R | None = _read_back(row).execute(conn, params).first()
        return first

    def merge_articles(self, conn: Connection, unique: dict[str, tuple[str, ArticleIn]],
                       now: datetime, shared: dict[str, Any]) -> int:
        """Skip known ids, INSERT IGNORE absorbs a concurrent insert."""
        feeds = {feed_id for feed_id, _ in unique.values()}
        existing = set(conn.scalars(select(ARTICLES.c.id).where(  # the key's order: an index range
            ARTICLES.c.feed_id.in_(feeds), ARTICLES.c.id.in_(list(unique)))))
        fresh = [v for v in article_values(unique, now, shared) if v["id"] not in existing]
        if not fresh:
            return 0
        # the rowcount is what tells how many were really new
        new = int(conn.execute(insert(ARTICLES).prefix_with("IGNORE"), fresh).rowcount or 0)
        if new and shared["allocation_id"] is not None:
            ADD_NEW.execute(conn, {"b_id": shared["allocation_id"], "b_new": new})
        return new

    def insert_results(self, conn: Connection, rows: list[dict[str, Any]],
                       allocation_id: str) -> None:
        new_by_feed = dict(_NEW_BY_FEED.execute(conn, {"b_id": allocation_id}).all())
        _INSERT_RESULT_ROWS.executemany(conn, [
            {**row, "new_article_count": int(new_by_feed.get(row["feed_id"], 0))} for row in rows])
