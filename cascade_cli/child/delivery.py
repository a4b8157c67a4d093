"""Where an allocation's results are delivered from: the child's memory, or its spool.

An allocation's fetched articles (encoded once per feed) and its completion are sent to the
parent by one loop (``ChildWorker._deliver``) with one set of rules: upload in batches, 413
halves the batch, a repeated 500 drops the articles it refers to, 409 means the work was handed
on. The loop reads and acknowledges through a ``Results``:

* ``HeldResults``: the results of an allocation the child has just fetched, still in memory.
  Nothing is written to the spool on the way: when the parent takes everything (what happens
  almost always), the allocation cost the spool no insert, read, commit or delete. When the
  parent cannot take it now (unreachable, overloaded, 5xx other than 500) or the delivery is
  interrupted (a forced stop), ``keep()`` writes what is left, with the completion, to the spool
  in one transaction, and the spool's flusher delivers it later, as before.
* ``SpooledResults``: an allocation whose results are in the spool (a previous run's, one kept
  while the parent was down, or a large allocation spooled in chunks while it was fetched).

What a crash can lose is therefore what was fetched and not yet acknowledged by the parent,
which is exactly what a crash while fetching could always lose: the allocation was marked
started when it was claimed, the next start hands it back at once, and the parent hands it out
again (the parent stores each article once, whoever sends it twice).
"""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from typing import Any, Protocol

from cascade_cli.child.spool import Encoded, Spool, SpooledArticle, SpooledCompletion


class Results(Protocol):
    """An allocation's undelivered results, read and acknowledged in delivery order."""

    allocation_id: str

    def articles(self, limit: int) -> list[SpooledArticle]:
        """The oldest undelivered rows holding at most ``limit`` articles (at least one row)."""

    def delivered(self, batch: list[SpooledArticle], new_count: int) -> None:
        """The parent took ``batch`` (``new_count`` of its articles were new to it)."""

    def dropped(self, batch: list[SpooledArticle]) -> None:
        """``batch`` is given up (the parent refused it for good)."""

    def split(self, row: SpooledArticle) -> None:
        """Replace a several-article row by one row per article."""

    def completion(self) -> SpooledCompletion | None: ...

    def completed(self) -> None:
        """The parent took the completion: nothing of the allocation is left."""

    def forget(self) -> None:
        """Drop everything of the allocation (its work was handed on, or failed for good)."""

    def keep(self) -> None:
        """Make what is left durable, to be delivered later by the spool's flusher."""


class SpooledResults:
    """Results in the spool."""

    def __init__(self, spool: Spool, allocation_id: str) -> None:
        self.spool = spool
        self.allocation_id = allocation_id

    def articles(self, limit: int) -> list[SpooledArticle]:
        return self.spool.articles(self.allocation_id, limit)

    def delivered(self, batch: list[SpooledArticle], new_count: int) -> None:
        self.spool.ack_articles([a.seq for a in batch], allocation_id=self.allocation_id,
                                new_count=new_count)

    def dropped(self, batch: list[SpooledArticle]) -> None:
        self.spool.ack_articles([a.seq for a in batch])

    def split(self, row: SpooledArticle) -> None:
        self.spool.split(row)

    def completion(self) -> SpooledCompletion | None:
        return self.spool.completion(self.allocation_id)

    def completed(self) -> None:
        self.spool.ack_completion(self.allocation_id)

    def forget(self) -> None:
        self.spool.drop_allocation(self.allocation_id)

    def keep(self) -> None:
        """Already durable."""


@dataclass
class HeldResults:
    """A just-fetched allocation's results in memory: encoded article fragments per feed and
    the completion. ``spool`` is where they go if they cannot be delivered now."""

    spool: Spool
    allocation_id: str
    task_id: str | None
    epoch: int | None
    pending: InitVar[list[Encoded]]
    results: list[dict[str, Any]]
    article_count: int
    new_count: int = 0
    _rows: list[SpooledArticle] = field(init=False)
    _next_seq: int = field(init=False, default=0)
    _done: bool = field(init=False, default=False)

    def __post_init__(self, pending: list[Encoded]) -> None:
        self._rows = [self._row(feed_id, raw, n) for feed_id, raw, n in pending]

    def _row(self, feed_id: str | None, raw: bytes, n: int) -> SpooledArticle:
        self._next_seq += 1
        return SpooledArticle(self._next_seq, self.allocation_id, self.epoch, feed_id, raw, n)

    def articles(self, limit: int) -> list[SpooledArticle]:
        out: list[SpooledArticle] = []
        total = 0
        for row in self._rows:
            if out and total + row.count > limit:
                break
            out.append(row)
            total += row.count
        return out

    def _remove(self, batch: list[SpooledArticle]) -> None:
        gone = {a.seq for a in batch}
        self._rows = [r for r in self._rows if r.seq not in gone]

    def delivered(self, batch: list[SpooledArticle], new_count: int) -> None:
        self._remove(batch)
        self.new_count += new_count

    def dropped(self, batch: list[SpooledArticle]) -> None:
        self._remove(batch)

    def split(self, row: SpooledArticle) -> None:
        singles = [self._row(row.feed_id, self.spool.encode_article(a), 1)
                   for a in row.articles]
        at = next(i for i, r in enumerate(self._rows) if r.seq == row.seq)
        self._rows[at:at + 1] = singles

    def completion(self) -> SpooledCompletion | None:
        if self._done:
            return None
        return SpooledCompletion(self.allocation_id, self.task_id, self.epoch, self.results,
                                 self.article_count, self.new_count)

    def _finish(self) -> None:
        self._done = True
        self._rows = []

    def completed(self) -> None:
        self._finish()
        self.spool.unmark_started(self.allocation_id)  # all the spool ever held of it

    def forget(self) -> None:
        self._finish()
        self.spool.drop_allocation(self.allocation_id)

    def keep(self) -> None:
        if self._done:
            return
        rows = [(r.feed_id, r.raw, r.count) for r in self._rows]
        self.spool.add_completion(self.allocation_id, self.task_id, self.epoch, self.results,
                                  self.article_count, articles=rows, new_count=self.new_count)
        self._finish()
