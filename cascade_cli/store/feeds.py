"""Feeds (公众号 through an RSS bridge, or any RSS/Atom/JSON Feed URL)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session

from cascade_cli.clock import isoformat_z
from cascade_cli.config import Settings
from cascade_cli.errors import Conflict, InvalidInput, NotFound
from cascade_cli.protocol import FeedIn, FeedUpdate
from cascade_cli.store.models import Allocation, Article, Feed, FeedResult, Node
from cascade_cli.store.prepared import PaddedIn

_URL_RE = re.compile(r"^(https?|file)://\S+$|^cmd:\S*$")


def _check_url(url: str, kind: str) -> str:
    url = url.strip()
    if kind == "command":
        return url  # an argument for the configured command, free form
    if not _URL_RE.match(url):
        raise InvalidInput(f"feed url must be an http(s) URL, got {url!r}", field="url")
    return url


def _resolve_node(session: Session, ident: str | None) -> str | None:
    if not ident:
        return None
    node = session.get(Node, ident) or session.scalar(select(Node).where(Node.name == ident))
    if node is None:
        raise InvalidInput(f"preferred_node: no node named or numbered {ident!r}",
                           field="preferred_node")
    return node.id


def create_feed(session: Session, now: datetime, data: FeedIn) -> Feed:
    feed_id = data.id or f"FEED_{uuid.uuid4().hex[:16]}"
    if session.get(Feed, feed_id) is not None:
        raise Conflict(f"a feed with id '{feed_id}' already exists", code="duplicate_id")
    feed = Feed(id=feed_id, mp_name=data.mp_name or feed_id, url=_check_url(data.url, data.kind),
                kind=data.kind, faker_id=data.faker_id, mp_cover=data.mp_cover,
                mp_intro=data.mp_intro, status=data.status,
                preferred_node=_resolve_node(session, data.preferred_node),
                created_at=now, updated_at=now)
    session.add(feed)
    session.flush()
    return feed


def get_feed(session: Session, feed_id: str) -> Feed:
    feed = session.get(Feed, feed_id)
    if feed is None:
        raise NotFound("feed", feed_id, hint="'cascade feeds list' shows the feeds")
    return feed


def update_feed(session: Session, now: datetime, feed_id: str, data: FeedUpdate) -> Feed:
    feed = get_feed(session, feed_id)
    changes = data.model_dump(exclude_unset=True)
    if "preferred_node" in changes:
        feed.preferred_node = _resolve_node(session, changes.pop("preferred_node"))
    for key, value in changes.items():
        if value is None and key in ("url", "kind", "status", "mp_name"):
            continue
        setattr(feed, key, value)
    feed.url = _check_url(feed.url, feed.kind)
    feed.updated_at = now
    return feed


def delete_feed(session: Session, feed_id: str) -> None:
    session.delete(get_feed(session, feed_id))


def list_feeds(session: Session, *, limit: int = 100, offset: int = 0,
               status: int | None = None) -> tuple[list[Feed], int]:
    q = select(Feed)
    count_q = select(func.count()).select_from(Feed)
    if status is not None:
        q = q.where(Feed.status == status)
        count_q = count_q.where(Feed.status == status)
    total = int(session.scalar(count_q) or 0)
    rows = list(session.scalars(q.order_by(Feed.created_at, Feed.id).limit(limit).offset(offset)))
    return rows, total


def article_counts(session: Session, feed_ids: list[str]) -> dict[str, int]:
    if not feed_ids:
        return {}
    rows = session.execute(select(Article.feed_id, func.count()).where(
        Article.feed_id.in_(feed_ids)).group_by(Article.feed_id))
    return {fid: int(n) for fid, n in rows}


def feed_dict(feed: Feed, article_count: int | None = None) -> dict[str, Any]:
    return {
        "id": feed.id, "mp_name": feed.mp_name, "url": feed.url, "kind": feed.kind,
        "faker_id": feed.faker_id, "mp_cover": feed.mp_cover, "mp_intro": feed.mp_intro,
        "status": feed.status, "preferred_node": feed.preferred_node,
        "created_at": isoformat_z(feed.created_at), "updated_at": isoformat_z(feed.updated_at),
        "article_count": article_count,
    }


def package_feed(feed: Feed) -> dict[str, Any]:
    """A feed as a child sees it inside a task package."""
    return {"id": feed.id, "faker_id": feed.faker_id, "mp_name": feed.mp_name,
            "mp_cover": feed.mp_cover, "mp_intro": feed.mp_intro, "status": feed.status,
            "url": feed.url, "kind": feed.kind, "etag": feed.etag,
            "last_modified": feed.last_modified}


# Table columns, not ORM attributes: a plain Core select skips the ORM execution layer.
_FC = cast(Table, Feed.__table__).c
PACKAGE_COLUMNS = (_FC.id, _FC.faker_id, _FC.mp_name, _FC.mp_cover, _FC.mp_intro,
                    _FC.status, _FC.url, _FC.kind, _FC.etag, _FC.last_modified)


# Prepared lookups for lists of any length (NULL-padded to 1, 8, 64 or 512 ids).
_PACKAGE_BY_IDS = PaddedIn(lambda ids: select(*PACKAGE_COLUMNS).where(_FC.id.in_(ids)),
                           _FC.id.type)


def package_feeds(session: Session, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Feeds as a child sees them in a task package, by id (columns only: on the claim path)."""
    return {row.id: row._asdict()
            for row in _PACKAGE_BY_IDS.rows(session.connection(), ids)}


def feed_status(session: Session, now: datetime, settings: Settings, *, limit: int = 100,
                offset: int = 0) -> list[dict[str, Any]]:
    """Per feed: article count, latest article time, freshness, last allocation outcome."""
    feeds, _ = list_feeds(session, limit=limit, offset=offset)
    ids = [f.id for f in feeds]
    counts = article_counts(session, ids)
    latest = dict(session.execute(select(Article.feed_id, func.max(Article.publish_time))
                                  .where(Article.feed_id.in_(ids)).group_by(Article.feed_id)).all()
                  ) if ids else {}
    last_result: dict[str, FeedResult] = {}
    if ids:
        sub = (select(FeedResult.feed_id, func.max(FeedResult.id).label("mid"))
               .where(FeedResult.feed_id.in_(ids)).group_by(FeedResult.feed_id).subquery())
        for r in session.scalars(select(FeedResult).join(sub, FeedResult.id == sub.c.mid)):
            last_result[r.feed_id] = r
    out = []
    for f in feeds:
        newest = latest.get(f.id)
        last = last_result.get(f.id)
        age = (now - newest).total_seconds() if newest else None
        out.append({
            "feed_id": f.id, "mp_name": f.mp_name, "status": f.status,
            "article_count": counts.get(f.id, 0),
            "latest_article_time": isoformat_z(newest),
            "freshness_seconds": int(age) if age is not None else None,
            "last_fetched_at": isoformat_z(f.last_fetched_at),
            "last_status": f.last_status, "last_error": f.last_error,
            "last_allocation_id": last.allocation_id if last else None,
            "last_node_id": last.node_id if last else None,
        })
    return out


def feeds_for_ids(session: Session, ids: list[str]) -> dict[str, Feed]:
    if not ids:
        return {}
    found: dict[str, Feed] = {}
    # chunk to stay below bind-parameter limits on every database
    for start in range(0, len(ids), 5000):
        chunk = ids[start:start + 5000]
        for f in session.scalars(select(Feed).where(Feed.id.in_(chunk))):
            found[f.id] = f
    return found


__all__ = ["create_feed", "update_feed", "delete_feed", "get_feed", "list_feeds", "feed_dict",
           "feed_status", "package_feed", "feeds_for_ids", "article_counts", "Allocation"]


def feed_exists(session: Session, feed_id: str) -> bool:
    return session.get(Feed, feed_id) is not None


@dataclass(frozen=True)
class FeedProblems:
    """Feeds a task names that its runs will skip (the original's problem 4, "公众号不存在")."""

    missing: list[str]  # no such feed
    disabled: list[str]  # the feed exists with status 0

    def __bool__(self) -> bool:
        return bool(self.missing or self.disabled)

    def lines(self) -> list[str]:
        """One phrase per kind of problem, as the CLI's warning and the admin API's message
        both say it."""
        said = []
        if self.missing:
            said.append(f"feeds {', '.join(self.missing)} do not exist")
        if self.disabled:
            said.append(f"feeds {', '.join(self.disabled)} are disabled")
        return said


def feed_problems(session: Session, ids: list[str]) -> FeedProblems:
    """Which of ``ids`` do not exist and which are disabled, each in the order given."""
    unique = list(dict.fromkeys(ids))
    state = feed_states(session, unique)
    return FeedProblems(missing=[f for f in unique if f not in state],
                        disabled=[f for f in unique if f in state and state[f] != 1])


def feed_states(session: Session, ids: list[str]) -> dict[str, int]:
    """Feed id -> status (1 enabled, 0 disabled) for those of ``ids`` that exist."""
    if not ids:
        return {}
    return {fid: int(st) for fid, st in session.execute(
        select(Feed.id, Feed.status).where(Feed.id.in_(ids)))}


def dispatch_facts(session: Session, ids: list[str]) -> dict[str, tuple[int, str | None]]:
    """(status, preferred_node) per existing feed of ``ids``: what dispatch splits them by.
    Columns only, in chunks below every database's bind-parameter limit."""
    facts: dict[str, tuple[int, str | None]] = {}
    for start in range(0, len(ids), 5000):
        rows = session.execute(select(Feed.id, Feed.status, Feed.preferred_node)
                               .where(Feed.id.in_(ids[start:start + 5000])))
        facts.update({fid: (int(status), preferred) for fid, status, preferred in rows})
    return facts
