"""The child's durable spool: fetched articles and completions, kept until the parent acked them.

A SQLite file (``child.spool_path``, default ``<data_dir>/spool.db``). The worker marks an
allocation as started when it claims it. When every feed is done, the worker delivers the
allocation's results straight from memory (``delivery.HeldResults``); only what the parent
cannot take now (an outage, an overload, a forced stop) is written here, the articles together
with the completion (per-feed results) in one transaction. An allocation whose fetched articles
grow large is written here in chunks while it is fetched, and delivered from here. Rows are
deleted only after the parent answered 2xx for them, or answered that the work is no longer ours
(409). A crash, a SIGKILL or a parent outage therefore loses nothing that reached the spool; an
allocation that was only started (the child died while fetching or delivering from memory) is
found by the next start and handed back at once, and the parent hands it out again. The next
start (or reconnect) flushes the spool before claiming anything new.

A row of ``spool_articles`` holds ``n`` articles as one JSON fragment (the objects joined by
commas, ``n`` = 1 for a single article): the worker encodes a feed's articles once and spools
them as one row, and an upload joins rows verbatim into the request body. Fragments are UTF-8
bytes from end to end (stored as BLOBs; rows of earlier versions, TEXT, are read as bytes):
no decode after encoding, no re-encode when SQLite binds them or the upload sends them.

One connection, used from the event-loop thread only; every write is its own transaction.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


def _dumps(value: Any) -> str:
    """Compact JSON text, non-ASCII kept as is.

    orjson: a feed's 20 articles (~17 KB) took ~0.1 ms in the json module, 7% of a child's CPU
    per feed once parsing got fast; orjson does it in a tenth. A string orjson refuses (a lone
    surrogate) goes through the json module as before."""
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


PAGE_SIZE = 16384

def _dumpb(value: Any) -> bytes:
    """``_dumps`` as UTF-8 bytes (what orjson produces): article fragments stay bytes. What
    orjson refuses (a lone surrogate) the json module writes as ASCII with ``\\u`` escapes:
    valid UTF-8 whatever the text held."""
    try:
        return orjson.dumps(value, default=str)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), default=str).encode("ascii")


SCHEMA = """
CREATE TABLE IF NOT EXISTS spool_articles (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    allocation_id TEXT NOT NULL,
    epoch INTEGER,
    feed_id TEXT,
    article TEXT NOT NULL,
    created REAL NOT NULL,
    n INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS ix_spool_articles_alloc ON spool_articles (allocation_id, seq);
CREATE TABLE IF NOT EXISTS spool_completions (
    allocation_id TEXT PRIMARY KEY,
    task_id TEXT,
    epoch INTEGER,
    results TEXT NOT NULL,
    article_count INTEGER NOT NULL,
    new_count INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS spool_meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS spool_started (
    allocation_id TEXT PRIMARY KEY,
    epoch INTEGER,
    created REAL NOT NULL
);
"""


@dataclass(frozen=True)
class SpooledArticle:
    seq: int
    allocation_id: str
    epoch: int | None
    feed_id: str | None
    raw: bytes  # ``count`` articles as UTF-8 JSON, uploaded as is (no decode/encode)
    count: int = 1

    @property
    def article(self) -> dict[str, Any]:
        """The article of a one-article row."""
        return dict(_loads(self.raw))

    @property
    def articles(self) -> list[dict[str, Any]]:
        return list(_loads(b"[" + self.raw + b"]"))


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:  # an escaped lone surrogate (the json module's fallback)
        return json.loads(raw)


@dataclass(frozen=True)
class SpooledCompletion:
    allocation_id: str
    task_id: str | None
    epoch: int | None
    results: list[dict[str, Any]]
    article_count: int
    new_count: int


Encoded = tuple[str | None, bytes, int]  # (feed_id, JSON fragment, article count)


class SpoolBusy(Exception):
    """Another child process uses this spool file."""


class Spool:
    def __init__(self, path: str | Path, *, lock: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        """``clock``: wall-clock seconds for the rows' ``created`` (their delivery order)."""
        self.path = Path(path)
        self._clock = clock
        self._lock_fd: int | None = None
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if lock:
                # Two children on one spool would flush each other's work with the wrong
                # credentials: one spool, one process.
                fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise SpoolBusy(str(self.path)) from None
                self._lock_fd = fd
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                                   timeout=30)
        # A new file gets 16 KiB pages: a feed's articles (one row, ~17 KB in the benchmark)
        # then take one or two pages instead of a chain of five 4 KiB overflow pages, which
        # every insert, read and delete walks (~40% less CPU in the spool's transactions).
        # Without effect on an existing file (its page size is fixed once it is in WAL mode).
        self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        self._db.execute("PRAGMA journal_mode=WAL")
        # Debian's and others' SQLite builds turn secure_delete on: every acknowledged row's
        # pages were overwritten with zeros and written again through the WAL, which made an
        # acknowledgement cost more than the insert. FAST zeroes what costs no extra I/O; the
        # spool holds fetched (public) feed content, and durability does not depend on it.
        self._db.execute("PRAGMA secure_delete=FAST")
        # NORMAL in WAL mode: a committed write survives a crash or SIGKILL of the child (what
        # the spool is for); only an OS crash or power cut may lose the last transactions.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(spool_articles)")}
        if "n" not in columns:  # a spool written by an earlier version: one article a row
            self._db.execute("ALTER TABLE spool_articles ADD COLUMN n INTEGER NOT NULL "
                             "DEFAULT 1")

    def close(self) -> None:
        self._db.close()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            self._lock_fd = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- writes ----------------------------------------------------------------------------

    def mark_started(self, allocation_id: str, epoch: int | None) -> None:
        """Remember a claimed allocation until its completion is spooled or it is dropped, so a
        child that dies while fetching can hand it back on its next start."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO spool_started (allocation_id, epoch, created) "
                       "VALUES (?, ?, ?)", (allocation_id, epoch, self._clock()))

    @staticmethod
    def encode_article(article: dict[str, Any]) -> bytes:
        """The JSON (UTF-8) stored and later uploaded verbatim (encoded once)."""
        return _dumpb(article)

    @staticmethod
    def encode_articles(articles: list[dict[str, Any]]) -> bytes:
        """Several articles as one fragment (``a,b,c``): one encoder call for a whole feed."""
        return _dumpb(articles)[1:-1]

    def add_articles(self, allocation_id: str, epoch: int | None, feed_id: str | None,
                     articles: Iterable[dict[str, Any]]) -> int:
        return self.add_encoded(allocation_id, epoch,
                                [(feed_id, self.encode_article(a)) for a in articles])

    def add_encoded(self, allocation_id: str, epoch: int | None,
                    articles: list[tuple[str | None, bytes]] | list[Encoded]) -> int:
        """Encoded articles: (feed_id, json) pairs from ``encode_article``, or
        (feed_id, fragment, count) triples from ``encode_articles``. Returns the article count."""
        if articles:
            with self._tx() as db:
                self._insert_encoded(db, allocation_id, epoch, articles)
        return sum(a[2] if len(a) > 2 else 1 for a in articles)

    def _insert_encoded(self, db: sqlite3.Connection, allocation_id: str, epoch: int | None,
                        articles: list[tuple[str | None, bytes]] | list[Encoded]) -> None:
        now = self._clock()
        db.executemany("INSERT INTO spool_articles (allocation_id, epoch, feed_id, article, "
                       "created, n) VALUES (?, ?, ?, ?, ?, ?)",
                       [(allocation_id, epoch, a[0], a[1], now, a[2] if len(a) > 2 else 1)
                        for a in articles])

    def add_completion(self, allocation_id: str, task_id: str | None, epoch: int | None,
                       results: list[dict[str, Any]], article_count: int, *,
                       articles: list[tuple[str | None, bytes]] | list[Encoded] | None = None,
                       new_count: int = 0) -> None:
        """Spool the per-feed results, plus (optionally) the last encoded articles of the
        allocation, in one transaction: the allocation is then complete in the spool.
        ``new_count``: articles of it the parent already took as new."""
        with self._tx() as db:
            if articles:
                self._insert_encoded(db, allocation_id, epoch, articles)
            db.execute("INSERT OR REPLACE INTO spool_completions (allocation_id, task_id, epoch, "
                       "results, article_count, new_count, created) VALUES (?, ?, ?, ?, ?, "
                       "COALESCE((SELECT new_count FROM spool_completions WHERE allocation_id "
                       "= ?), 0) + ?, ?)",
                       (allocation_id, task_id, epoch, _dumps(results),
                        article_count, allocation_id, new_count, self._clock()))
            db.execute("DELETE FROM spool_started WHERE allocation_id = ?", (allocation_id,))

    def ack_articles(self, seqs: Iterable[int], *, allocation_id: str | None = None,
                     new_count: int = 0) -> None:
        ids = list(seqs)
        with self._tx() as db:
            db.executemany("DELETE FROM spool_articles WHERE seq = ?", [(s,) for s in ids])
            if allocation_id and new_count:
                db.execute("UPDATE spool_completions SET new_count = new_count + ? "
                           "WHERE allocation_id = ?", (new_count, allocation_id))

    def split(self, row: SpooledArticle) -> None:
        """Replace a several-article row by one row per article (a batch the parent found too
        large was that one row)."""
        items = [(row.feed_id, self.encode_article(a)) for a in row.articles]
        with self._tx() as db:
            db.execute("DELETE FROM spool_articles WHERE seq = ?", (row.seq,))
            self._insert_encoded(db, row.allocation_id, row.epoch, items)

    def ack_completion(self, allocation_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM spool_completions WHERE allocation_id = ?", (allocation_id,))

    def unmark_started(self, allocation_id: str) -> None:
        """An allocation delivered without reaching the spool: forget its "started" mark."""
        with self._tx() as db:
            db.execute("DELETE FROM spool_started WHERE allocation_id = ?", (allocation_id,))

    def drop_allocation(self, allocation_id: str) -> int:
        """Forget everything about an allocation (lease lost, cancelled, released)."""
        with self._tx() as db:
            n = int(db.execute("SELECT COALESCE(SUM(n), 0) FROM spool_articles WHERE "
                               "allocation_id = ?", (allocation_id,)).fetchone()[0])
            db.execute("DELETE FROM spool_articles WHERE allocation_id = ?", (allocation_id,))
            n += db.execute("DELETE FROM spool_completions WHERE allocation_id = ?",
                            (allocation_id,)).rowcount
            db.execute("DELETE FROM spool_started WHERE allocation_id = ?", (allocation_id,))
        return n

    # --- reads -----------------------------------------------------------------------------

    def articles(self, allocation_id: str, limit: int) -> list[SpooledArticle]:
        """The oldest rows of an allocation holding at most ``limit`` articles together (at
        least one row, whatever its count)."""
        rows = self._db.execute(
            "SELECT seq, allocation_id, epoch, feed_id, article, n FROM spool_articles "
            "WHERE allocation_id = ? ORDER BY seq LIMIT ?", (allocation_id, limit)).fetchall()
        out: list[SpooledArticle] = []
        total = 0
        for r in rows:
            if out and total + r[5] > limit:
                break
            raw = r[4] if isinstance(r[4], bytes) else r[4].encode()  # TEXT: an earlier version
            out.append(SpooledArticle(r[0], r[1], r[2], r[3], raw, r[5]))
            total += r[5]
        return out

    def completion(self, allocation_id: str) -> SpooledCompletion | None:
        r = self._db.execute(
            "SELECT allocation_id, task_id, epoch, results, article_count, new_count "
            "FROM spool_completions WHERE allocation_id = ?", (allocation_id,)).fetchone()
        if r is None:
            return None
        return SpooledCompletion(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5])

    def allocation_ids(self) -> list[str]:
        """Every allocation with something unacknowledged, oldest first."""
        rows = self._db.execute(
            "SELECT allocation_id, MIN(created) FROM ("
            " SELECT allocation_id, created FROM spool_articles"
            " UNION ALL SELECT allocation_id, created FROM spool_completions"
            " UNION ALL SELECT allocation_id, created FROM spool_started)"
            " GROUP BY allocation_id ORDER BY 2").fetchall()
        return [r[0] for r in rows]

    def completed_allocation_ids(self) -> list[str]:
        rows = self._db.execute("SELECT allocation_id FROM spool_completions ORDER BY created")
        return [r[0] for r in rows.fetchall()]

    def counts(self) -> dict[str, int]:
        a = self._db.execute("SELECT COALESCE(SUM(n), 0) FROM spool_articles").fetchone()[0]
        c = self._db.execute("SELECT COUNT(*) FROM spool_completions").fetchone()[0]
        return {"articles": int(a), "completions": int(c)}

    def started_count(self) -> int:
        """Allocations marked started whose completion is not spooled yet."""
        return int(self._db.execute("SELECT COUNT(*) FROM spool_started").fetchone()[0])

    def is_empty(self) -> bool:
        counts = self.counts()
        return counts["articles"] == 0 and counts["completions"] == 0 and \
            self.started_count() == 0


@dataclass(frozen=True)
class WaitingSummary:
    """What a spool file holds for upload, read without opening it for writing."""

    articles: int
    completions: int
    oldest_created: float | None  # epoch seconds of the oldest waiting row


def waiting_summary(path: Path) -> WaitingSummary:
    """Count what waits in the spool at ``path`` read-only (``cascade doctor`` on a child,
    while ``run-child`` may hold the file). Raises ``sqlite3.DatabaseError`` for a file that
    is not a readable spool."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        tables = {r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        counts: dict[str, int] = {}
        oldest: float | None = None
        for table in ("spool_articles", "spool_completions"):
            if table not in tables:
                continue
            columns = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
            # A spool_articles row holds ``n`` articles (one feed's); older spools, one.
            amount = "COALESCE(SUM(n), 0)" if "n" in columns else "COUNT(*)"
            n, first = db.execute(f"SELECT {amount}, MIN(created) FROM {table}").fetchone()  # noqa: S608 - fixed names
            counts[table] = int(n)
            if first is not None:
                oldest = first if oldest is None else min(oldest, first)
    finally:
        db.close()
    return WaitingSummary(counts.get("spool_articles", 0), counts.get("spool_completions", 0),
                          oldest)
