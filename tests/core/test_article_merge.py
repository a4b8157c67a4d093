"""merge_articles stores every field faithfully and only once, on every database (each has
its own insert path: one JSON document expanded by json_to_recordset on PostgreSQL,
executemany on SQLite, INSERT IGNORE on MySQL/MariaDB)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import select

from cascade_cli.protocol import ArticleIn
from cascade_cli.store.articles import article_identity, merge_articles
from cascade_cli.store.models import Article


def test_merge_round_trips_fields_and_is_idempotent(any_store, clock) -> None:
    now = clock.now()
    beijing = timezone(timedelta(hours=8))
    full = ArticleIn(guid="g-1", title="公众号文章：测试", url="https://mp.example/s/1",
                     pic_url="https://img.example/1.jpg", description="摘要",
                     content="<p>正文</p>" * 50, author="作者", id="client-7",
                     publish_time=datetime(2026, 3, 1, 20, 30, tzinfo=beijing))
    bare = ArticleIn(url="https://mp.example/s/2")
    rows = [("F1", full), ("F1", bare), ("F1", full)]  # the repeat is merged within the batch
    with any_store.session() as s:
        new = merge_articles(s, now, rows, schedule_run_id=None, allocation_id="A1",
                             node_id=None)
    assert new == 2
    with any_store.session() as s:
        new = merge_articles(s, now, rows[:2], schedule_run_id=None, allocation_id="A2",
                             node_id=None)
    assert new == 0  # already stored: nothing new, nothing overwritten
    with any_store.session() as s:
        stored = {a.id: a for a in s.scalars(select(Article))}
    assert len(stored) == 2
    a = stored[article_identity("F1", full)]
    assert (a.feed_id, a.guid, a.client_id, a.title, a.url, a.pic_url, a.description,
            a.content, a.author, a.allocation_id) == (
        "F1", "g-1", "client-7", "公众号文章：测试", "https://mp.example/s/1",
        "https://img.example/1.jpg", "摘要", "<p>正文</p>" * 50, "作者", "A1")
    assert a.publish_time == datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
    assert a.created_at == now
    b = stored[article_identity("F1", bare)]
    assert (b.guid, b.title, b.content, b.publish_time) == (None, "", None, None)


def test_merge_keeps_escapes_control_characters_and_non_bmp_text(any_store, clock) -> None:
    """The JSON document (PostgreSQL) carries text as UTF-8 with only what JSON must escape
    escaped: quotes, backslashes, control characters and astral-plane characters all come
    back exactly as sent."""
    text = 'a "quoted" \\ back\\slash\tTab\nline \x01\x1f ctl 😀 emoji 公众号 \u2028 end'
    # model_construct: the wire model removes \x01 and \x1f from text (docs/protocol.md,
    # "Control characters"); the store must still keep whatever it is given exactly.
    article = ArticleIn.model_construct(guid="esc-1", title=text[:200], content=text * 3,
                                       author="作者 😀")
    with any_store.session() as s:
        assert merge_articles(s, clock.now(), [("F1", article)], schedule_run_id=None,
                              allocation_id="A1", node_id=None) == 1
    with any_store.session() as s:
        stored = s.scalars(select(Article)).one()
    assert (stored.title, stored.content, stored.author) == (text[:200], text * 3, "作者 😀")
