"""The interface behind which each database does the parent's hot writes its own way.

The shared logic (the state machine, validation, what is counted and recorded) lives in
``store.allocations`` and ``store.articles``; what differs between PostgreSQL, SQLite and
MySQL/MariaDB lives in one module each, behind ``Dialect``:

* ``claim``: one ``UPDATE ... RETURNING`` where the database has it (PostgreSQL, SQLite), a
  conditional UPDATE per candidate and a read-back where not (MySQL/MariaDB);
* ``owner_write``: the owner's conditional UPDATE, returning the row or read back;
* ``merge_articles``: ``INSERT ... ON CONFLICT DO NOTHING`` counted three different ways;
* ``record_completion``: a completion's feed results, feed outcomes and event;
* ``one_statement``: PostgreSQL's single-statement upload and completion for allocations
  this process handed out (``facts``), or None.

A ``Store`` picks its dialect once (``dialects.for_engine``) and its sessions carry it
(``dialects.of``). Rows come back as the NamedTuples below, whatever the database: callers
read attributes, never test which path produced a row.

This module holds what the dialects share: the row types, the statements' common parts and
``BaseDialect``, the default implementation that each dialect refines.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar, cast

from sqlalchemy import (
    JSON,
    Connection,
    Table,
    Update,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from cascade_cli.protocol import ArticleIn
from cascade_cli.store.alloc_facts import FactsMemory
from cascade_cli.store.events import insert_event
from cascade_cli.store.feeds import package_feeds
from cascade_cli.store.models import (
    ACTIVE_STATES,
    CLAIMED,
    COMPLETED,
    PENDING,
    Allocation,
    Article,
    Event,
    Feed,
    FeedResult,
    MessageTask,
    Node,
    is_active,
)
from cascade_cli.store.prepared import Prepared

# --- rows -------------------------------------------------------------------------------------


class AllocationRow(NamedTuple):
    """An allocation as a Core row: the model's columns, no ORM object (the ORM's identity
    map and unit of work were most of the parent's CPU per request). A claim also returns
    what the task package needs of the allocation's task (``task_message_type`` None: the
    task was deleted) and, on PostgreSQL, its feeds as the package lists them (see
    ``Dialect.package_feeds``); other rows leave those three None."""

    id: str
    schedule_run_id: str
    task_id: str
    task_name: str
    target_node_id: str | None
    node_id: str | None
    feed_ids: list[str]
    status: str
    attempt: int
    max_attempts: int
    epoch: int
    lease_expires_at: datetime | None
    result_summary: dict[str, Any] | None
    error_message: str | None
    article_count: int
    new_article_count: int
    dispatched_at: datetime
    claimed_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    task_message_type: int | None = None
    task_cron_exp: str | None = None
    package_feeds: list[dict[str, Any]] | None = None


# A claim's rows: allocations with the task fields (and on PostgreSQL the feeds) filled in.
ClaimedRow = AllocationRow


class StatusRow(NamedTuple):
    """What a status change to executing returns."""

    id: str
    status: str


class UploadOwnerRow(NamedTuple):
    """What an upload's ownership check returns: what the articles are checked against."""

    id: str
    feed_ids: list[str]
    schedule_run_id: str


# Any of the rows above that an owner write may return.
R = TypeVar("R", AllocationRow, StatusRow, UploadOwnerRow)

# --- the statements' shared parts --------------------------------------------------------------

ALLOC = cast(Table, Allocation.__table__)
A = ALLOC.c
NODES = cast(Table, Node.__table__)
N = NODES.c
FEEDS = cast(Table, Feed.__table__)
MT = cast(Table, MessageTask.__table__).c
ARTICLES = cast(Table, Article.__table__)
RESULTS = cast(Table, FeedResult.__table__)
EVENTS = cast(Table, Event.__table__)
ALLOCATION_COLUMNS = tuple(ALLOC.c)
if tuple(c.name for c in ALLOCATION_COLUMNS) != AllocationRow._fields[:len(ALLOCATION_COLUMNS)]:
    raise TypeError("AllocationRow must list the allocations table's columns first")

# Typed explicitly: a bind inside a CASE gets no type from its column.
NOW = bindparam("b_now", type_=A.updated_at.type)
LEASE = bindparam("b_lease", type_=A.lease_expires_at.type)


def running_of_node() -> Any:
    """How many allocations the node ``b_node`` holds: a count over the node's entries in
    ``ix_alloc_node_status``, which on SQLite and PostgreSQL holds active allocations only
    (``is_active`` writes the states so that the planners can use it). With a full index,
    PostgreSQL, holding statistics from before the node took any work, had looked up the
    node's whole history and filtered it; the partial index holds no history."""
    return (select(func.count()).select_from(ALLOC)
            .where(A.node_id == bindparam("b_node"), is_active(A.status))
            .scalar_subquery())


RUNNING = Prepared(select(running_of_node()))

# Nodes whose targeted allocations anybody may take: disabled, or offline past grace.
# Parameters b_node (the claiming node) and b_cutoff.
ORPHANS = select(N.id).where(N.id != bindparam("b_node"), or_(
    N.enabled.is_(False), N.revoked_at.is_not(None),
    N.last_heartbeat_at.is_(None),
    N.last_heartbeat_at < bindparam("b_cutoff", type_=N.last_heartbeat_at.type)))

# Pending work a node may take: the shared pool, work targeted at it, and work targeted at
# nodes that are gone (disabled, or offline past ``affinity_grace``). Targeted work can only
# be taken by its node while that node lives, so it goes there first without any ordering
# trick.
CLAIMABLE = and_(A.status == PENDING, or_(
    A.target_node_id.is_(None), A.target_node_id == bindparam("b_node"),
    A.target_node_id.in_(ORPHANS)))
CANDIDATES = (select(A.id, A.epoch).where(CLAIMABLE).order_by(A.created_at, A.id)
              .limit(bindparam("b_want")))
CLAIMED_VALUES = {A.status: CLAIMED, A.node_id: bindparam("b_node"), A.epoch: A.epoch + 1,
                  A.attempt: A.attempt + 1, A.lease_expires_at: LEASE, A.claimed_at: NOW,
                  A.started_at: None, A.updated_at: NOW}
# What a task package needs of the allocation's task, returned by the claim itself (one
# round trip less per claimed allocation).
TASK_COLUMNS = (
    select(MT.message_type).where(MT.id == A.task_id).scalar_subquery()
    .label("task_message_type"),
    select(MT.cron_exp).where(MT.id == A.task_id).scalar_subquery().label("task_cron_exp"))


def free_capacity(greatest: Any, least: Any) -> Any:
    """How many more the claiming node may take now: ``min(b_want, b_capacity - running)``,
    never negative (SQLite reads a negative LIMIT as no limit at all). ``greatest`` and
    ``least``: the database's functions for them."""
    free: Any = bindparam("b_capacity") - running_of_node()
    return greatest(0, least(bindparam("b_want"), free))


def columns_of(row: type[Any]) -> list[Any]:
    """The allocations table's columns that a row type names (AllocationRow's claim-only
    fields are not columns)."""
    return [ALLOC.c[name] for name in row._fields if name in ALLOC.c]


def owner_conditions(with_epoch: bool) -> list[Any]:
    """The allocation ``b_id``, held by ``b_node``, still active (and at ``b_epoch``)."""
    where = [A.id == bindparam("b_id"), A.node_id == bindparam("b_node"),
             A.status.in_(ACTIVE_STATES)]
    if with_epoch:  # clients that send no epoch (legacy children) are accepted as owner
        where.append(A.epoch == bindparam("b_epoch"))
    return where


def owner_update(values: dict[Any, Any], *, with_epoch: bool, ordered: bool = False) -> Update:
    stmt = update(ALLOC).where(*owner_conditions(with_epoch))
    # ``ordered``: MySQL/MariaDB evaluate SET assignments left to right, seeing the values
    # already assigned; the dict's order puts columns read by a CASE before they change.
    return stmt.ordered_values(*values.items()) if ordered else stmt.values(values)


class OwnerWrite:
    """One owner write, prebuilt: (epoch given / not given) x (the row type returned, or
    none for databases without ``UPDATE ... RETURNING``), each a ``Prepared`` statement."""

    def __init__(self, values: dict[Any, Any], ordered: bool = False) -> None:
        self.updates = {e: owner_update(values, with_epoch=e, ordered=ordered)
                        for e in (False, True)}
        self._prepared: dict[tuple[bool, type[Any] | None], Prepared] = {}

    def prepared(self, with_epoch: bool, row: type[Any] | None) -> Prepared:
        stmt = self._prepared.get((with_epoch, row))
        if stmt is None:
            update_: Any = self.updates[with_epoch]
            if row is not None:
                update_ = update_.returning(*columns_of(row))
            stmt = self._prepared[(with_epoch, row)] = Prepared(update_, row=row)
        return stmt


COMPLETED_VALUES = {
    A.status: COMPLETED, A.result_summary: bindparam("b_summary", type_=JSON),
    # counters only grow: a completion never lowers what uploads or an earlier report counted
    A.article_count: case((A.article_count > bindparam("b_count"), A.article_count),
                          else_=bindparam("b_count")),
    A.error_message: None, A.completed_at: NOW, A.lease_expires_at: None,
    A.updated_at: NOW}

# A feed's fetch outcome; a failed fetch or a result without validators keeps the old ones.
FEED_FETCHED = Prepared(
    update(FEEDS).where(FEEDS.c.id == bindparam("b_id"))
    .values(last_status=bindparam("b_status"), last_error=bindparam("b_error"),
            etag=func.coalesce(bindparam("b_etag"), FEEDS.c.etag),
            last_modified=func.coalesce(bindparam("b_last_modified"), FEEDS.c.last_modified),
            last_fetched_at=bindparam("b_now", type_=FEEDS.c.last_fetched_at.type)))
RESULT_KEYS = ["allocation_id", "schedule_run_id", "feed_id", "node_id", "status",
               "article_count", "error", "duration_ms", "created_at"]
EVENT_KEYS = ["node_id", "operation", "direction", "status", "task_id", "allocation_id",
              "count", "error", "detail", "created_at"]
# Only the new count grows on upload: a retried upload (spool flush after a lost ack) finds
# nothing new and must not inflate anything. An atomic increment: concurrent uploads for one
# allocation never lose a count.
ADD_NEW = Prepared(update(ALLOC).where(A.id == bindparam("b_id"))
                   .values(new_article_count=A.new_article_count + bindparam("b_new")))
_READ = Prepared(select(*ALLOCATION_COLUMNS).where(A.id == bindparam("b_id")),
                 row=AllocationRow)
_READ_LOCKED = Prepared(select(*ALLOCATION_COLUMNS).where(A.id == bindparam("b_id"))
                        .with_for_update(), row=AllocationRow)


def article_values(unique: dict[str, tuple[str, ArticleIn]], now: datetime,
                   shared: dict[str, Any]) -> list[dict[str, Any]]:
    """The article rows to insert, one per stored identity (``shared``: the allocation's
    ``schedule_run_id``, ``allocation_id`` and ``node_id``)."""
    return [{
        "id": ident, "feed_id": feed_id, "guid": a.guid, "client_id": a.id,
        "title": a.title or "", "url": a.url or "", "pic_url": a.pic_url,
        "description": a.description, "content": a.content, "author": a.author,
        "publish_time": a.publish_time, **shared, "created_at": now,
    } for ident, (feed_id, a) in unique.items()]


# --- the interface -----------------------------------------------------------------------------


class OneStatementWrites(Protocol):
    """An owner's upload and completion as one statement each, for an allocation whose fixed
    facts this process remembers (``Dialect.facts``): no read-back before the write."""

    def upload(self, conn: Connection, with_epoch: bool, params: dict[str, Any],
               unique: dict[str, tuple[str, ArticleIn]], shared: dict[str, Any]) -> int | None:
        """The number of new articles, or None if the caller may not write (the write
        matched nothing: the ordinary path's diagnosis then tells why)."""
        ...

    def complete(self, conn: Connection, with_epoch: bool,
                 params: dict[str, Any]) -> AllocationRow | None:
        """The completed row, or None if the caller may not complete it."""
        ...


class Dialect(Protocol):
    """What differs between the databases in the parent's hot writes."""

    @property
    def name(self) -> str: ...
    @property
    def facts(self) -> FactsMemory:
        """What this process remembers of the allocations it claimed (the store's)."""
        ...
    @property
    def one_statement(self) -> OneStatementWrites | None:
        """The one-statement owner writes, where the database has them."""
        ...

    def claim(self, session: Session, params: dict[str, Any]) -> list[ClaimedRow]:
        """Move up to ``b_want`` claimable allocations (within the node's free capacity) to
        ``b_node``; the claimed rows, oldest first."""
        ...

    def package_feeds(self, session: Session, alloc: ClaimedRow) -> dict[str, dict[str, Any]]:
        """The claimed allocation's feeds as a task package lists them, by id."""
        ...

    def owner_write(self, conn: Connection, write: OwnerWrite, with_epoch: bool,
                    row: type[R], params: dict[str, Any]) -> R | None:
        """Run an owner write; the changed row, or None if it matched nothing."""
        ...

    def read_current(self, conn: Connection, alloc_id: str) -> AllocationRow | None:
        """The allocation as it is now (a locking read where the database has row locks)."""
        ...

    def merge_articles(self, conn: Connection, unique: dict[str, tuple[str, ArticleIn]],
                       now: datetime, shared: dict[str, Any]) -> int:
        """Insert the articles not stored yet, add their number to the allocation's
        ``new_article_count``; return it."""
        ...

    def record_completion(self, session: Session, alloc: AllocationRow, node_id: str,
                          now: datetime, results: list[dict[str, Any]],
                          event: dict[str, Any]) -> None:
        """A completion's feed results, its feeds' fetch outcomes and its event."""
        ...


class BaseDialect:
    """What most databases do alike; each dialect module refines it."""

    name: ClassVar[str]
    one_statement: OneStatementWrites | None = None
    claiming: ClassVar[Prepared]  # UPDATE ... RETURNING the claimed rows (ClaimedRow)

    def __init__(self, facts: FactsMemory | None = None) -> None:
        self.facts = facts if facts is not None else FactsMemory()

    def claim(self, session: Session, params: dict[str, Any]) -> list[ClaimedRow]:
        """One statement: the node's free capacity is counted, the candidates moved and
        returned at once, with their task's package fields."""
        rows: list[ClaimedRow] = self.claiming.execute(session.connection(), params).all()
        rows.sort(key=lambda a: (a.created_at, a.id))
        return rows

    def package_feeds(self, session: Session, alloc: ClaimedRow) -> dict[str, dict[str, Any]]:
        return package_feeds(session, list(alloc.feed_ids or []))

    def owner_write(self, conn: Connection, write: OwnerWrite, with_epoch: bool,
                    row: type[R], params: dict[str, Any]) -> R | None:
        first: R | None = write.prepared(with_epoch, row).execute(conn, params).first()
        return first

    def read_current(self, conn: Connection, alloc_id: str) -> AllocationRow | None:
        # a locking read sees the current row, not a stale snapshot
        first: AllocationRow | None = _READ_LOCKED.execute(conn, {"b_id": alloc_id}).first()
        return first


class StepwiseCompletion(BaseDialect, ABC):
    """A dialect that records a completion as Core statements, one executemany each (not
    an ORM object per feed): the results (``insert_results``, the dialect's own), the
    feeds' outcomes, the event."""

    @abstractmethod
    def insert_results(self, conn: Connection, rows: list[dict[str, Any]],
                       allocation_id: str) -> None:
        """feed_results rows of one allocation, with their new-article counts."""

    def record_completion(self, session: Session, alloc: AllocationRow, node_id: str,
                          now: datetime, results: list[dict[str, Any]],
                          event: dict[str, Any]) -> None:
        if results:
            conn = session.connection()
            self.insert_results(conn, [
                {"allocation_id": alloc.id, "schedule_run_id": alloc.schedule_run_id,
                 "feed_id": r["feed_id"], "node_id": node_id, "status": r["status"],
                 "article_count": r["article_count"], "error": r["error"],
                 "duration_ms": r["duration_ms"], "created_at": now} for r in results],
                alloc.id)
            FEED_FETCHED.executemany(conn, [{
                "b_id": r["feed_id"], "b_status": r["status"], "b_error": r["last_error"],
                "b_etag": r["etag"], "b_last_modified": r["last_modified"], "b_now": now}
                for r in results])
        insert_event(session, now, **event)


def read_unlocked(conn: Connection, alloc_id: str) -> AllocationRow | None:
    first: AllocationRow | None = _READ.execute(conn, {"b_id": alloc_id}).first()
    return first


def rows_by_id(conn: Connection, ids: Sequence[str]) -> list[ClaimedRow]:
    """Claimed allocations read back (databases without ``UPDATE ... RETURNING``), in the
    order of ``ids``."""
    found = {row.id: AllocationRow._make((*row, None)) for row in conn.execute(
        select(*ALLOCATION_COLUMNS, *TASK_COLUMNS).where(A.id.in_(list(ids)))).all()}
    return [found[i] for i in ids if i in found]
