"""Article merging: the stored identity is derived from (feed, guid or url), never from a raw
client id alone, so the same article fetched by two nodes, or twice, is one row."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    Table,
    bindparam,
    column,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cascade_cli.errors import InvalidInput
from cascade_cli.protocol import ArticleIn
from cascade_cli.store.models import Allocation, Article
from cascade_cli.store.prepared import Prepared


def article_identity(feed_id: str, article: ArticleIn) -> str:
    basis = article.guid or article.url or article.id or article.title
    if not basis:
        raise InvalidInput("an article needs a guid, url, id or title to be identified",
                           field="articles", code="invalid_article")
    return hashlib.sha256(f"{feed_id}\n{basis.strip()}".encode()).hexdigest()


_TABLE = cast(Table, Article.__table__)
_COLUMNS = [c.name for c in _TABLE.c]


_KEY = ["feed_id", "id"]  # the primary key (see models.Article)
_SQLITE_INSERT_NEW = Prepared(sqlite.insert(_TABLE).on_conflict_do_nothing(index_elements=_KEY),
                              column_keys=_COLUMNS)
_ALLOCATIONS = cast(Table, Allocation.__table__)
# Only the new count grows on upload: a retried upload (spool flush after a lost ack) finds
# nothing new and must not inflate anything. An atomic increment: concurrent uploads for one
# allocation never lose a count.
_ADD_NEW = Prepared(update(_ALLOCATIONS).where(_ALLOCATIONS.c.id == bindparam("b_id"))
                    .values(new_article_count=_ALLOCATIONS.c.new_article_count
                            + bindparam("b_new")))
# PostgreSQL: the whole merge is one statement with one parameter. The rows travel as one
# JSON document (encoded by orjson, see engine._json_for_postgres) that the server expands into the
# table's row type; the insert and the allocation's counter are one round trip. Arrays per
# column (``unnest``) cost more: psycopg builds array literals element by element in Python,
# and a multi-row VALUES list is a new SQL text for every batch size.
_ROWS = (func.json_to_recordset(bindparam("b_rows", type_=postgresql.JSON))
         .table_valued(*[column(c.name, c.type) for c in _TABLE.c])
         .render_derived(name="r", with_types=True))


def new_articles_cte(*conditions: Any) -> Any:
    """PostgreSQL: the CTE that inserts the ``b_rows`` document's articles not stored yet
    (when ``conditions`` hold) and returns their ids."""
    return (postgresql.insert(_TABLE).from_select(_COLUMNS, select(*_ROWS.c).where(*conditions))
            .on_conflict_do_nothing(index_elements=_KEY).returning(_TABLE.c.id)
            .cte("new"))


_NEW = new_articles_cte()
_BUMP = (update(_ALLOCATIONS).where(_ALLOCATIONS.c.id == bindparam("b_alloc"),
                                    exists(select(_NEW.c.id)))
         .values(new_article_count=_ALLOCATIONS.c.new_article_count
                 + select(func.count()).select_from(_NEW).scalar_subquery())
         .cte("bump"))
_PG_MERGE = Prepared(select(func.count()).select_from(_NEW).add_cte(_BUMP))


def _json_time(value: datetime) -> str:
    """A datetime as the JSON document carries it: naive UTC (see types.UTCDateTime)."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat()


# The article's own columns that may be NULL: (column, ArticleIn attribute).
_OPTIONAL = (("guid", "guid"), ("client_id", "id"), ("pic_url", "pic_url"),
             ("description", "description"), ("content", "content"), ("author", "author"))


def pg_document(unique: dict[str, tuple[str, ArticleIn]], now: datetime,
                 shared: dict[str, Any]) -> list[dict[str, Any]]:
    """PostgreSQL: the rows as one JSON document, built directly in its final form. A NULL
    is left out (``json_to_recordset`` reads a missing key as NULL): a smaller document to
    encode here and to parse there, and no per-value type test."""
    common = {k: v for k, v in shared.items() if v is not None}
    common["created_at"] = _json_time(now)
    document = []
    for ident, (feed_id, a) in unique.items():
        row = {"id": ident, "feed_id": feed_id, "title": a.title or "", "url": a.url or "",
               **common}
        for name, attr in _OPTIONAL:
            value = getattr(a, attr)
            if value is not None:
                row[name] = value
        if a.publish_time is not None:
            row["publish_time"] = _json_time(a.publish_time)
        document.append(row)
    return document


def unique_articles(rows: Sequence[tuple[str, ArticleIn]]) -> dict[str, tuple[str, ArticleIn]]:
    """The articles by stored identity, the first of repeats kept."""
    unique: dict[str, tuple[str, ArticleIn]] = {}
    for feed_id, a in rows:
        unique.setdefault(article_identity(feed_id, a), (feed_id, a))
    return unique


def merge_articles(session: Session, now: datetime, rows: Sequence[tuple[str, ArticleIn]], *,
                   schedule_run_id: str | None, allocation_id: str | None,
                   node_id: str | None) -> int:
    """Insert what is not stored yet; return how many were new, and add that number to the
    allocation's ``new_article_count``. Idempotent and race-safe: a concurrent insert of the
    same article by another node is absorbed by the database."""
    unique = unique_articles(rows)
    if not unique:
        return 0
    shared = {"schedule_run_id": schedule_run_id, "allocation_id": allocation_id,
              "node_id": node_id}
    dialect = session.get_bind().dialect.name
    conn = session.connection()  # Core on the connection: no ORM execution layer
    if dialect == "postgresql":
        return int(_PG_MERGE.execute(conn, {"b_rows": pg_document(unique, now, shared),
                                            "b_alloc": allocation_id}).scalar() or 0)
    values = {ident: {
        "id": ident, "feed_id": feed_id, "guid": a.guid, "client_id": a.id,
        "title": a.title or "", "url": a.url or "", "pic_url": a.pic_url,
        "description": a.description, "content": a.content, "author": a.author,
        "publish_time": a.publish_time, "schedule_run_id": schedule_run_id,
        "allocation_id": allocation_id, "node_id": node_id, "created_at": now,
    } for ident, (feed_id, a) in unique.items()}
    if dialect == "sqlite":
        # SQLite sums the rows each execution inserted: a skipped conflict counts 0.
        new = _SQLITE_INSERT_NEW.executemany(conn, list(values.values()))
    else:
        new = _insert_ignore(session, values)
    if new and allocation_id is not None:
        _ADD_NEW.execute(conn, {"b_id": allocation_id, "b_new": new})
    return new


def _insert_ignore(session: Session, values: dict[str, dict[str, Any]]) -> int:
    """MySQL/MariaDB: no RETURNING; skip known ids, INSERT IGNORE absorbs a concurrent insert."""
    feeds = {v["feed_id"] for v in values.values()}
    existing = set(session.scalars(select(Article.id).where(  # the key's order: an index range
        Article.feed_id.in_(feeds), Article.id.in_(list(values)))))
    fresh = [v for v in values.values() if v["id"] not in existing]
    if not fresh:
        return 0
    # Core execution on the session's connection: the ORM result of a bulk insert has no
    # rowcount, and the rowcount is what tells how many were really new.
    result = session.connection().execute(insert(_TABLE).prefix_with("IGNORE"), fresh)
    return int(result.rowcount or 0)
