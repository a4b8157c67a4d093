"""Article merging: the stored identity is derived from (feed, guid or url), never from a raw
client id alone, so the same article fetched by two nodes, or twice, is one row."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cascade_cli.errors import InvalidInput
from cascade_cli.protocol import ArticleIn
from cascade_cli.store.models import Article


def article_identity(feed_id: str, article: ArticleIn) -> str:
    basis = article.guid or article.url or article.id or article.title
    if not basis:
        raise InvalidInput("an article needs a guid, url, id or title to be identified",
                           field="articles", code="invalid_article")
    return hashlib.sha256(f"{feed_id}\n{basis.strip()}".encode()).hexdigest()


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
    if dialect in ("postgresql", "sqlite"):
        ins = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
        stmt = ins.on_conflict_do_nothing(index_elements=["id"]).returning(table.c.id)
        conn = session.connection()  # Core on the connection: no ORM execution layer
        new = 0
        for start in range(0, len(batch), 500):
            new += len(conn.execute(stmt, batch[start:start + 500]).all())
        return new
    # MySQL/MariaDB: no RETURNING; skip known ids, INSERT IGNORE absorbs a concurrent insert.
    existing = set(session.scalars(select(Article.id).where(Article.id.in_(list(values)))))
    fresh = [v for v in batch if v["id"] not in existing]
    if not fresh:
        return 0
    # Core execution on the session's connection: the ORM result of a bulk insert has no
    # rowcount, and the rowcount is what tells how many were really new.
    result = session.connection().execute(insert(table).prefix_with("IGNORE"), fresh)
    return int(result.rowcount or 0)
