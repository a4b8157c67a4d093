"""Article merging: the stored identity is derived from (feed, guid or url), never from a raw
client id alone, so the same article fetched by two nodes, or twice, is one row.

How the rows go in differs per database (``dialects``: one statement with a JSON document on
PostgreSQL, ``ON CONFLICT DO NOTHING`` on SQLite, ``INSERT IGNORE`` on MySQL/MariaDB); what
is stored and counted does not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from cascade_cli.errors import InvalidInput
from cascade_cli.protocol import ArticleIn
from cascade_cli.store import dialects


def article_identity(feed_id: str, article: ArticleIn) -> str:
    basis = article.guid or article.url or article.id or article.title
    if not basis:
        raise InvalidInput("an article needs a guid, url, id or title to be identified",
                           field="articles", code="invalid_article")
    return hashlib.sha256(f"{feed_id}\n{basis.strip()}".encode()).hexdigest()


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
    # Core on the connection: no ORM execution layer
    return dialects.of(session).merge_articles(session.connection(), unique, now, shared)
