"""Retention: delete old history in small batches, each its own transaction.

What ``purge`` removes (older than the cut = now - older_than):
  * finished runs (no allocation still pending/claimed/executing) with their allocations and
    feed results - except each task's most recent cron run, which the scheduler uses to know
    which tick it fired last (deleting it could make a ``run_once`` task catch up again);
  * feed results and events;
  * deliveries that are ``delivered`` or ``dead`` (pending ones are never touched);
  * expired authentication nonces (any age: once expired they protect nothing);
  * articles first stored before the cut, only when asked (``articles=True``). An article
    that a feed still lists is stored again as new on the next fetch (and notified again).

Safe while parents run: batches are short transactions selected by primary key, every delete
repeats its condition, and nothing a running parent still needs (active runs, pending
deliveries, live nonces) matches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, tuple_
from sqlalchemy.orm import Session

from cascade_cli import durations
from cascade_cli.clock import isoformat_z
from cascade_cli.errors import InvalidInput
from cascade_cli.store.engine import Store
from cascade_cli.store.models import (
    ACTIVE_STATES,
    DELIVERY_DEAD,
    DELIVERY_DELIVERED,
    PENDING,
    RUN_RUNNING,
    Allocation,
    Article,
    AuthNonce,
    Delivery,
    Event,
    FeedResult,
    ScheduleRun,
)


def parse_duration(text: str) -> timedelta:
    """An age cut: ``30d``, ``12h``, ``3600``, ``1d12h`` (see ``durations``)."""
    return durations.parse_timedelta(text, field="older_than")


@dataclass
class PurgeReport:
    cut: datetime
    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)
    batches: int = 0

    def add(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + int(n or 0)

    def to_dict(self) -> dict[str, Any]:
        return {"cut": isoformat_z(self.cut), "dry_run": self.dry_run, "batches": self.batches,
                "deleted" if not self.dry_run else "would_delete": dict(self.counts)}


def _affected(result: Any) -> int:
    """Rows changed by an UPDATE/DELETE (``CursorResult.rowcount``, loosely typed upstream)."""
    return int(getattr(result, "rowcount", 0) or 0)


def _run_candidates(s: Session, cut: datetime, after: str, batch: int) -> tuple[list[str], str]:
    """Ids of deletable runs with id > after; returns (ids, last id scanned)."""
    active = select(Allocation.id).where(Allocation.schedule_run_id == ScheduleRun.id,
                                         Allocation.status.in_((PENDING, *ACTIVE_STATES)))
    rows = s.execute(select(ScheduleRun.id, ScheduleRun.task_id, ScheduleRun.scheduled_for,
                            ScheduleRun.trigger).where(
        ScheduleRun.id > after, ScheduleRun.created_at < cut,
        ScheduleRun.status != RUN_RUNNING,
        or_(ScheduleRun.finished_at.is_(None), ScheduleRun.finished_at < cut),
        ~active.exists()).order_by(ScheduleRun.id).limit(batch)).all()
    if not rows:
        return [], after
    task_ids = {r.task_id for r in rows if r.trigger == "cron"}
    latest: dict[str, datetime] = {}
    if task_ids:
        latest = dict(s.execute(select(ScheduleRun.task_id, func.max(ScheduleRun.scheduled_for))
                                .where(ScheduleRun.task_id.in_(task_ids),
                                       ScheduleRun.trigger == "cron")
                                .group_by(ScheduleRun.task_id)).all())
    keep = {r.id for r in rows if r.trigger == "cron" and latest.get(r.task_id) == r.scheduled_for}
    return [r.id for r in rows if r.id not in keep], rows[-1].id


def _purge_runs(store: Store, cut: datetime, batch: int, report: PurgeReport) -> None:
    after = ""
    while True:
        with store.session() as s:
            ids, last = _run_candidates(s, cut, after, batch)
            if last == after:
                return
            after = last
            if not ids:
                continue
            report.batches += 1
            if report.dry_run:
                report.add("allocations", s.scalar(select(func.count()).select_from(Allocation)
                                                   .where(Allocation.schedule_run_id.in_(ids)))
                           or 0)
                report.add("runs", len(ids))
                continue
            report.add("feed_results", _affected(s.execute(delete(FeedResult).where(
                FeedResult.schedule_run_id.in_(ids)))))
            report.add("allocations", _affected(s.execute(delete(Allocation).where(
                Allocation.schedule_run_id.in_(ids),
                Allocation.status.not_in((PENDING, *ACTIVE_STATES))))))
            report.add("runs", _affected(s.execute(delete(ScheduleRun).where(
                ScheduleRun.id.in_(ids), ScheduleRun.status != RUN_RUNNING))))


def _purge_by_key(store: Store, report: PurgeReport, name: str, key: Any, condition: Any,
                  batch: int) -> None:
    """Delete rows matching ``condition`` in primary-key batches. ``key`` is the primary
    key's column, or a tuple of its columns in the key's order."""
    columns = key if isinstance(key, tuple) else (key,)
    entity = columns[0].class_
    # A composite key pages and matches as a row value, ``(a, b) > (:a, :b)``: one index
    # range, on every supported database.
    keyed = tuple_(*columns) if len(columns) > 1 else columns[0]
    after: Any = None
    while True:
        with store.session() as s:
            q = select(*columns).where(condition).order_by(*columns).limit(batch)
            if after is not None:
                q = q.where(keyed > (tuple_(*after) if len(columns) > 1 else after[0]))
            ids = [tuple(row) for row in s.execute(q)]
            if not ids:
                return
            after = ids[-1]
            report.batches += 1
            if report.dry_run:
                report.add(name, len(ids))
            else:
                matched = keyed.in_(ids if len(columns) > 1 else [i[0] for i in ids])
                report.add(name, _affected(s.execute(delete(entity).where(matched, condition))))
        if len(ids) < batch:
            return


def purge(store: Store, now: datetime, older_than: timedelta, *, articles: bool = False,
          batch: int = 1000, dry_run: bool = False,
          progress: Callable[[str, int], None] | None = None) -> PurgeReport:
    if batch < 1:
        raise InvalidInput("batch must be at least 1", field="batch")
    if older_than <= timedelta(0):
        raise InvalidInput("older_than must be positive", field="older_than")
    cut = now - older_than
    report = PurgeReport(cut=cut, dry_run=dry_run)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("runs", lambda: _purge_runs(store, cut, batch, report)),
        ("feed_results", lambda: _purge_by_key(store, report, "feed_results", FeedResult.id,
                                               FeedResult.created_at < cut, batch)),
        ("events", lambda: _purge_by_key(store, report, "events", Event.id,
                                         Event.created_at < cut, batch)),
        ("deliveries", lambda: _purge_by_key(
            store, report, "deliveries", Delivery.id,
            and_(Delivery.status.in_((DELIVERY_DELIVERED, DELIVERY_DEAD)),
                 Delivery.updated_at < cut), batch)),
        ("nonces", lambda: _purge_by_key(store, report, "nonces", AuthNonce.nonce,
                                         AuthNonce.expires_at < now, batch)),
    ]
    if articles:
        steps.append(("articles", lambda: _purge_by_key(
            store, report, "articles", (Article.feed_id, Article.id), Article.created_at < cut,
            batch)))
    for name, step in steps:
        report.counts.setdefault(name, 0)
        step()
        if progress:
            progress(name, report.counts.get(name, 0))
    return report
