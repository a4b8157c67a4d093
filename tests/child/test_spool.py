"""The spool keeps results until acknowledged, across process death."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cascade_cli.child.spool import Spool, SpoolBusy


def test_roundtrip_ack_and_drop(tmp_path: Path) -> None:
    sp = Spool(tmp_path / "s.db")
    assert sp.is_empty()
    sp.add_articles("a1", 3, "F1", [{"title": "文章", "url": f"u{i}"} for i in range(5)])
    sp.add_articles("a2", 1, "F2", [{"title": "x", "url": "y"}])
    sp.add_completion("a1", "t1", 3, [{"feed_id": "F1", "status": "success"}], 5)
    assert sp.allocation_ids() == ["a1", "a2"]
    batch = sp.articles("a1", 2)
    assert [a.article["url"] for a in batch] == ["u0", "u1"] and batch[0].epoch == 3
    sp.ack_articles([a.seq for a in batch], allocation_id="a1", new_count=2)
    assert len(sp.articles("a1", 10)) == 3
    comp = sp.completion("a1")
    assert comp and comp.new_count == 2 and comp.article_count == 5 and comp.task_id == "t1"
    sp.ack_articles([a.seq for a in sp.articles("a1", 10)])
    sp.ack_completion("a1")
    assert sp.allocation_ids() == ["a2"]
    assert sp.drop_allocation("a2") == 1 and sp.is_empty()
    sp.close()


def test_survives_sigkill_mid_write(tmp_path: Path) -> None:
    """A child killed with SIGKILL right after spooling loses nothing that was committed."""
    path = tmp_path / "s.db"
    code = f"""
import os, signal
from cascade_cli.child.spool import Spool
sp = Spool({str(path)!r})
sp.add_articles("a1", 1, "F1", [{{"title": "t", "url": "u%d" % i}} for i in range(100)])
sp.add_completion("a1", "t1", 1, [{{"feed_id": "F1", "status": "success"}}], 100)
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=os.getcwd(), timeout=30)
    assert proc.returncode == -9
    sp = Spool(path)
    assert sp.counts() == {"articles": 100, "completions": 1}
    assert sp.completion("a1").article_count == 100
    sp.close()


def test_one_process_per_spool(tmp_path: Path) -> None:
    first = Spool(tmp_path / "s.db")
    with pytest.raises(SpoolBusy):
        Spool(tmp_path / "s.db")
    first.close()
    Spool(tmp_path / "s.db").close()  # free again once closed


def test_feed_fragments_batches_and_split(tmp_path: Path) -> None:
    """A feed's articles are one row (one JSON fragment); batches never exceed the limit unless
    one row alone does; a row can be split into single articles."""
    import json

    sp = Spool(tmp_path / "s.db")
    feeds = [[{"title": f"t{f}-{i}", "url": f"u{f}-{i}"} for i in range(20)] for f in range(3)]
    n = sp.add_encoded("a1", 2, [(f"F{f}", Spool.encode_articles(arts), len(arts))
                                 for f, arts in enumerate(feeds)])
    sp.add_articles("a1", 2, "F9", [{"title": "single", "url": "s"}])
    assert n == 60 and sp.counts()["articles"] == 61
    batch = sp.articles("a1", 45)
    assert [a.count for a in batch] == [20, 20]
    body = json.loads(b"[" + b",".join(a.raw for a in batch) + b"]")
    assert body == feeds[0] + feeds[1]
    assert [a.count for a in sp.articles("a1", 5)] == [20]  # one row at least
    sp.split(batch[0])
    assert sp.counts()["articles"] == 61
    assert [a.count for a in sp.articles("a1", 1000)] == [20, 20, 1] + [1] * 20
    assert sp.drop_allocation("a1") == 61 and sp.is_empty()
    sp.close()


def test_spool_of_an_earlier_version_is_read(tmp_path: Path) -> None:
    """A spool file without the ``n`` column (one article a row) is upgraded in place."""

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE spool_articles (seq INTEGER PRIMARY KEY AUTOINCREMENT,
            allocation_id TEXT NOT NULL, epoch INTEGER, feed_id TEXT, article TEXT NOT NULL,
            created REAL NOT NULL);
        INSERT INTO spool_articles (allocation_id, epoch, feed_id, article, created)
            VALUES ('a1', 1, 'F1', '{"title": "old", "url": "u"}', 0);
    """)
    db.commit()
    db.close()
    sp = Spool(path)
    assert sp.counts()["articles"] == 1
    (row,) = sp.articles("a1", 10)
    assert row.count == 1 and row.article == {"title": "old", "url": "u"}
    assert row.raw == b'{"title": "old", "url": "u"}'  # TEXT rows come back as UTF-8 bytes
    sp.close()


def test_article_fragments_are_json_with_non_ascii_kept() -> None:
    """orjson encodes the fragments; what it refuses (a lone surrogate) the json module does."""
    arts = [{"title": "公众号 \u2028 \"q\"", "publish_time": 1795161600, "url": "http://x/1"},
            {"title": "x", "url": "http://x/2", "extra": object()}]
    fragment = Spool.encode_articles(arts)
    assert "公众号".encode() in fragment  # UTF-8 bytes, not \\u-escaped
    back = json.loads(b"[" + fragment + b"]")
    assert back[0] == arts[0] and back[1]["extra"].startswith("<object")
    odd = Spool.encode_article({"title": "\ud800", "url": "http://x/3"})
    assert json.loads(odd) == {"title": "\ud800", "url": "http://x/3"}
    odd.decode("utf-8")  # escaped: still valid UTF-8 for the upload body


def test_new_spool_pages_and_deletes_cost_no_extra_io(tmp_path: Path) -> None:
    """A new spool gets 16 KiB pages (a feed's articles in one or two pages, not a chain of
    overflow pages) and does not rewrite acknowledged rows with zeros (secure_delete, on in
    some SQLite builds, doubled the writes of every acknowledgement); an existing file keeps
    its page size and its rows."""
    sp = Spool(tmp_path / "s.db")
    db = sp._db
    assert db.execute("PRAGMA page_size").fetchone()[0] == 16384
    assert db.execute("PRAGMA secure_delete").fetchone()[0] == 2  # FAST
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    arts = [{"title": "x" * 900, "url": f"u{i}"} for i in range(20)]
    sp.add_completion("a1", "t1", 1, [{"feed_id": "F1", "status": "success"}], 20,
                      articles=[("F1", Spool.encode_articles(arts), 20)])
    sp.close()
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.execute("PRAGMA journal_mode=WAL")  # 4 KiB pages, fixed from now on
    conn.close()
    sp = Spool(old)
    assert sp._db.execute("PRAGMA page_size").fetchone()[0] == 4096
    sp.add_completion("a1", "t1", 1, [], 20, articles=[("F1", Spool.encode_articles(arts), 20)])
    assert [a["url"] for a in sp.articles("a1", 100)[0].articles] == [f"u{i}" for i in
                                                                       range(20)]
    sp.close()
    reopened = Spool(tmp_path / "s.db")
    assert reopened.completion("a1") is not None and reopened.counts()["articles"] == 20
    reopened.close()


def test_fragments_are_stored_and_read_as_bytes(tmp_path: Path) -> None:
    """What the worker encodes is what the upload sends, byte for byte, without a decode."""
    sp = Spool(tmp_path / "s.db")
    arts = [{"title": "文章 \"q\"", "url": f"u{i}"} for i in range(3)]
    fragment = Spool.encode_articles(arts)
    assert isinstance(fragment, bytes)
    sp.add_completion("a1", "t1", 1, [], 3, articles=[("F1", fragment, 3)])
    (row,) = sp.articles("a1", 10)
    assert row.raw == fragment and row.articles == arts
    assert sp._db.execute("SELECT typeof(article) FROM spool_articles").fetchone()[0] == "blob"
    sp.split(row)
    assert [r.article for r in sp.articles("a1", 10)] == arts
    sp.close()


def test_oldest_first_by_the_injected_clock(tmp_path: Path) -> None:
    """``created`` comes from the spool's clock: delivery order follows it, not the order of
    the calls (a wall clock stepped back by NTP orders the same way)."""
    times = iter([300.0, 100.0, 200.0])
    spool = Spool(tmp_path / "s.db", clock=lambda: next(times))
    spool.mark_started("late", 1)
    spool.add_completion("early", "t", 1, [{"feed_id": "F", "status": "success"}], 0)
    spool.mark_started("middle", 1)
    assert spool.allocation_ids() == ["early", "middle", "late"]
    assert spool.completed_allocation_ids() == ["early"]
    spool.close()
