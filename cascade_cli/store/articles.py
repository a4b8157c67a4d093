"""Article merging: the stored identity is derived from (feed, guid or url), never from a raw
client id alone, so the same article fetched by two nodes, or twice, is one row."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select
from sqlalchemy import cast as sa_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cascade_cli.errors import InvalidInput
from cascade_cli.protocol import ArticleIn
from cascade_cli.store.models import Article
from cascade_cli.store.prepared import Prepared


def article_identity(feed_id: str, article: ArticleIn) -> str:
    basis = article.guid or article.url or article.id or article.title
    if not basis:
        raise InvalidInput("an article needs a guid, url, id or title to be identified",
                           field="articles", code="invalid_article")
    return hashlib.sha256(f"{feed_id}\n{basis.strip()}".encode()).hexdigest()


_TABLE = cast(Table, Article.__table__)
_COLUMNS = [c.name for c in _TABLE.c]


_SQLITE_INSERT_NEW = Prepared(sqlite.insert(_TABLE).on_conflict_do_nothing(index_elements=["id"]),
                              column_keys=_COLUMNS)
# INSERT ... SELECT FROM unnest(one array per column): the same SQL text whatever the batch
# size (see merge_articles).
_PG_UNNEST_INSERT = (
    postgresql.insert(_TABLE)
    .from_select(_COLUMNS, select(func.unnest(*[
        sa_cast(bindparam(f"a_{c.name}"), postgresql.ARRAY(c.type)) for c in _TABLE.c
    ]).table_valued(*_COLUMNS).render_derived(name="u")))
    .on_conflict_do_nothing(index_elements=["id"]).returning(_TABLE.c.id))


def merge_articles(session: Session, now: datetime, rows: Sequence[tuple[str, ArticleIn]], *,
                   schedule_run_id: str | None, allocation_id: str | None,
                   node_id: str | None) -> int:
    """Insert what is not stored yet; return how many were new. Idempotent and race-safe:
    a concurrent insert of the same article by another node is absorbed by the database."""
    values: dict[str, dict[str, Any]] = {}
    for feed_id, a in rows:
        ident = article_identity(feed_id, a)
        if ident in values:
            continue
        values[ident] = {
            "id": ident, "feed_id": feed_id, "guid": a.guid, "client_id": a.id,
            "title": a.title or "", "url": a.url or "", "pic_url": a.pic_url,
            "description": a.description, "content": a.content, "author": a.author,
            "publish_time": a.publish_time, "schedule_run_id": schedule_run_id,
            "allocation_id": allocation_id, "node_id": node_id, "created_at": now,
        }
    if not values:
        return 0
    batch = list(values.values())
    table = cast(Table, Article.__table__)  # Core, not the ORM bulk path: runs on every upload
    dialect = session.get_bind().dialect.name
    conn = session.connection()  # Core on the connection: no ORM execution layer
    if dialect == "postgresql":
        # One short statement with one array per column. A multi-row VALUES list would be
        # a different, long SQL text for every batch size, which psycopg parses again on
        # every call (it caches only short queries): that was most of an upload's CPU.
        arrays = {f"a_{c}": [row[c] for row in batch] for c in _COLUMNS}
        return len(conn.execute(_PG_UNNEST_INSERT, arrays).all())
    if dialect == "sqlite":
        # SQLite sums the rows each execution inserted: a skipped conflict counts 0.
        return _SQLITE_INSERT_NEW.executemany(conn, batch)
    # MySQL/MariaDB: no RETURNING; skip known ids, INSERT IGNORE absorbs a concurrent insert.
    existing = set(session.scalars(select(Article.id).where(Article.id.in_(list(values)))))
    fresh = [v for v in batch if v["id"] not in existing]
    if not fresh:
        return 0
    # Core execution on the session's connection: the ORM result of a bulk insert has no
    # rowcount, and the rowcount is what tells how many were really new.
    result = session.connection().execute(insert(table).prefix_with("IGNORE"), fresh)
    return int(result.rowcount or 0)
