"""Allocations: atomic claims, leases, the state machine and per-node writes.

State machine (PROTOCOL.md):
  pending --claim--> claimed --executing--> executing --completion--> completed
  claimed/executing --failed--> failed;  --released / lease expired--> pending;
  lease expired with no attempts left --> timeout.  completed/failed/timeout are terminal.

Claims are a conditional UPDATE checked by row count (``... WHERE status='pending' AND
epoch=:seen``), with candidates read ``FOR UPDATE SKIP LOCKED`` where the database has it, so
one allocation is never handed to two claims, whatever the number of parent processes.
Every claim increments the allocation's ``epoch``: the fencing token that makes a write from a
superseded holder fail with 409 ``lease_superseded``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Integer,
    Select,
    String,
    Table,
    Text,
    Update,
    and_,
    any_,
    bindparam,
    case,
    column,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from cascade_cli import PROTOCOL_VERSION
from cascade_cli.clock import isoformat_z
from cascade_cli.config import Settings
from cascade_cli.errors import (
    InvalidInput,
    InvalidTransition,
    LeaseSuperseded,
    NotOwner,
    PayloadTooLarge,
    ProtocolError,
)
from cascade_cli.protocol import (
    ArticleIn,
    HeartbeatIn,
    ReportCompletionIn,
    TaskStatusIn,
    UploadArticlesIn,
)
from cascade_cli.store import alloc_facts
from cascade_cli.store import nodes as node_repo
from cascade_cli.store.articles import (
    merge_articles,
    new_articles_cte,
    pg_document,
    unique_articles,
)
from cascade_cli.store.events import insert_event
from cascade_cli.store.feeds import PACKAGE_COLUMNS, package_feeds
from cascade_cli.store.models import (
    ACTIVE_STATES,
    CLAIMED,
    COMPLETED,
    EXECUTING,
    FAILED,
    PENDING,
    TERMINAL_STATES,
    Allocation,
    Article,
    Event,
    Feed,
    FeedResult,
    MessageTask,
    Node,
    is_active,
)
from cascade_cli.store.nodes import NodeRow
from cascade_cli.store.prepared import Prepared
from cascade_cli.store.runs import allocation_finished


class AllocationNotFound(ProtocolError):
    status = 404
    code = "allocation_not_found"


def lease_ttl(settings: Settings) -> float:
    return settings.parent.lease_ttl


def heartbeat_interval(settings: Settings) -> float:
    """What children are told: the configured interval, but never so long that a lease
    could expire between two heartbeats."""
    configured = settings.parent.heartbeat_interval or settings.cascade.heartbeat_interval
    return max(1.0, min(configured, lease_ttl(settings) / 3))


_ALLOC = cast(Table, Allocation.__table__)
_A = _ALLOC.c
_NODES = cast(Table, Node.__table__)
_N = _NODES.c
_FEEDS = cast(Table, Feed.__table__)
# An allocation as a Core ``Row``: the model's column names as attributes, no ORM object.
# The claim and the owner writes return these (the ORM's identity map and unit of work were
# most of the parent's CPU per request).
AllocationRow = Any  # a Core ``Row`` or a ``Prepared`` named tuple: attribute access only
# Typed explicitly: a bind inside a CASE gets no type from its column.
_NOW = bindparam("b_now", type_=_A.updated_at.type)
_LEASE = bindparam("b_lease", type_=_A.lease_expires_at.type)


def _running_of_node() -> Any:
    """How many allocations the node ``b_node`` holds: a count over the node's entries in
    ``ix_alloc_node_status``, which on SQLite and PostgreSQL holds active allocations only
    (``is_active`` writes the states so that the planners can use it). With a full index,
    PostgreSQL, holding statistics from before the node took any work, had looked up the
    node's whole history and filtered it; the partial index holds no history."""
    return (select(func.count()).select_from(_ALLOC)
            .where(_A.node_id == bindparam("b_node"), is_active(_A.status))
            .scalar_subquery())


_RUNNING = Prepared(select(_running_of_node()))


def running_count(session: Session, node_id: str) -> int:
    return int(_RUNNING.execute(session.connection(), {"b_node": node_id}).scalar() or 0)


def orphaned_targets(session: Session, now: datetime, settings: Settings,
                     me: str) -> list[str]:
    """Nodes whose targeted allocations anybody may take: disabled, or offline past grace."""
    return list(session.scalars(_ORPHANS, {"b_node": me, "b_cutoff": _cutoff(now, settings)}))


def _cutoff(now: datetime, settings: Settings) -> datetime:
    return now - timedelta(seconds=settings.parent.offline_after + settings.parent.affinity_grace)


# Parameters b_node (the claiming node) and b_cutoff (``_cutoff``).
_ORPHANS = select(_N.id).where(_N.id != bindparam("b_node"), or_(
    _N.enabled.is_(False), _N.revoked_at.is_not(None),
    _N.last_heartbeat_at.is_(None),
    _N.last_heartbeat_at < bindparam("b_cutoff", type_=_N.last_heartbeat_at.type)))

# Pending work a node may take: the shared pool, work targeted at it, and work targeted at
# nodes that are gone (disabled, or offline past ``affinity_grace``). Targeted work can only
# be taken by its node while that node lives, so it goes there first without any ordering
# trick.
_CLAIMABLE = and_(_A.status == PENDING, or_(
    _A.target_node_id.is_(None), _A.target_node_id == bindparam("b_node"),
    _A.target_node_id.in_(_ORPHANS)))
_CANDIDATES = (select(_A.id, _A.epoch).where(_CLAIMABLE).order_by(_A.created_at, _A.id)
               .limit(bindparam("b_want")))
_CLAIMED = {_A.status: CLAIMED, _A.node_id: bindparam("b_node"), _A.epoch: _A.epoch + 1,
            _A.attempt: _A.attempt + 1, _A.lease_expires_at: _LEASE, _A.claimed_at: _NOW,
            _A.started_at: None, _A.updated_at: _NOW}


_MT = cast(Table, MessageTask.__table__).c
# What a task package needs of the allocation's task, returned by the claim itself where the
# database has UPDATE ... RETURNING (one round trip less per claimed allocation).
_TASK_COLUMNS = (
    select(_MT.message_type).where(_MT.id == _A.task_id).scalar_subquery()
    .label("task_message_type"),
    select(_MT.cron_exp).where(_MT.id == _A.task_id).scalar_subquery().label("task_cron_exp"))


def _package_feeds_column() -> Any:
    """PostgreSQL: the allocation's feeds as a task package lists them, as one JSON array
    returned by the claim itself (``feeds.package_feeds`` is one more round trip)."""
    f = _FEEDS.alias("f")
    fields = [part for c in PACKAGE_COLUMNS for part in (literal(c.name), f.c[c.name])]
    return type_coerce(
        select(func.json_agg(func.json_build_object(*fields)))
        .where(f.c.id == _any_of(select(func.json_array_elements_text(_A.feed_ids))
                                   .correlate(_ALLOC))).scalar_subquery(), JSON
    ).label("package_feeds")


def _any_of(values: Select[Any]) -> Any:
    """PostgreSQL: ``= ANY(ARRAY(values))``, so that a lookup of ids listed in a JSON document
    is index probes whatever the planner guesses. An ``IN (SELECT ... FROM json_...)`` is
    guessed at 100 rows (the planner cannot see into the document) and was run as a hash join
    over a sequential scan of the whole table (0.4-0.9 ms per claim or completion with 3,000
    feeds, and growing with the table)."""
    return any_(func.array(values.scalar_subquery()))


def _free_capacity(dialect: str) -> Any:
    """How many more the claiming node may take now: ``min(b_want, b_capacity - running)``,
    never negative (SQLite reads a negative LIMIT as no limit at all)."""
    free: Any = bindparam("b_capacity") - _running_of_node()
    if dialect == "sqlite":  # SQLite's scalar min()/max() take several arguments
        return func.max(0, func.min(bindparam("b_want"), free))
    return func.greatest(0, func.least(bindparam("b_want"), free))


@lru_cache(maxsize=8)
def _claim_statements(dialect: str, returning: bool) -> tuple[Prepared, Prepared]:
    """The candidate query and the claiming UPDATE for a database, built once."""
    q = _CANDIDATES
    if dialect in ("postgresql", "mysql", "mariadb"):
        q = q.with_for_update(skip_locked=True, of=_ALLOC)
    if not returning:  # MySQL/MariaDB: one UPDATE per candidate, checked by row count
        return Prepared(q), Prepared(update(_ALLOC).where(
            _A.id == bindparam("b_id"), _A.status == PENDING,
            _A.epoch == bindparam("b_epoch")).values(_CLAIMED))
    # One statement: the node's free capacity is counted, the candidates (locked, skipping
    # rows other claims hold) are moved and returned at once, with their task's package
    # fields. On PostgreSQL the candidates are a CTE: it runs exactly once (an ``IN (SELECT
    # ... LIMIT n)`` may be re-run by the planner and move more than n rows).
    picked = q.with_only_columns(_A.id).limit(_free_capacity(dialect))
    if dialect == "postgresql":
        # ``= ANY(ARRAY(...))`` and not a join with the CTE: the planner cannot know how
        # many rows the LIMIT expression lets through, guessed a tenth of the pending rows,
        # and joined them by hashing the whole table (0.7 of a 0.8 ms claim with 3,000
        # allocations, growing with the table); the array makes it primary-key probes.
        target = _A.id == _any_of(select(picked.cte("picked").c.id))
    else:
        target = _A.id.in_(picked.scalar_subquery())
    # ``status = 'pending'`` again on the outer rows guards the rows locked after the
    # candidates were read. SQLite has no row locks: the whole statement runs under its single
    # write lock, so the candidates cannot change underneath it, and with the condition its
    # planner walked every pending row of the status index and tested each against the few
    # picked ids (a claim cost grew with the backlog) instead of looking the ids up.
    still_pending = () if dialect == "sqlite" else (_A.status == PENDING,)
    extra = (_package_feeds_column(),) if dialect == "postgresql" else ()
    return Prepared(q), Prepared(update(_ALLOC).where(target, *still_pending)
                                 .values(_CLAIMED).returning(*_ALLOC.c, *_TASK_COLUMNS,
                                                             *extra))


def claim(session: Session, now: datetime, node: Node | NodeRow, settings: Settings, *,
          max_count: int = 1) -> list[AllocationRow]:
    """Claim up to ``max_count`` allocations within the node's free capacity."""
    conn = session.connection()
    dialect = conn.dialect
    candidates, claiming = _claim_statements(dialect.name, bool(dialect.update_returning))
    params: dict[str, Any] = {
        "b_node": node.id, "b_cutoff": _cutoff(now, settings), "b_want": max_count,
        "b_capacity": node.max_capacity, "b_now": now,
        "b_lease": now + timedelta(seconds=lease_ttl(settings))}
    if dialect.update_returning:  # PostgreSQL, SQLite >= 3.35
        allocs = list(claiming.execute(conn, params).all())
        allocs.sort(key=lambda a: (a.created_at, a.id))
        if allocs and dialect.name == "postgresql":
            alloc_facts.remember(session, allocs)
        return allocs
    # MySQL/MariaDB have no UPDATE ... RETURNING: a conditional UPDATE per candidate,
    # checked by row count, then the claimed rows are read back.
    want = min(max_count, node.max_capacity - running_count(session, node.id))
    if want <= 0:
        return []
    params["b_want"] = want
    claimed_ids: list[str] = []
    for alloc_id, seen_epoch in candidates.execute(conn, params).all():
        result = claiming.execute(conn, {**params, "b_id": alloc_id, "b_epoch": seen_epoch})
        if result.rowcount == 1:
            claimed_ids.append(alloc_id)
    if not claimed_ids:
        return []
    # Claims are counted by metrics and visible on the allocation (node, claimed_at, epoch);
    # an event row per claim would only grow the log.
    allocs = list(conn.execute(select(*_ALLOC.c).where(_A.id.in_(claimed_ids))).all())
    allocs.sort(key=lambda a: claimed_ids.index(a.id))
    return allocs


_TASK_SCHEDULE = Prepared(select(_MT.message_type, _MT.cron_exp)
                          .where(_MT.id == bindparam("b_id")))


_TASK_WEBHOOK = Prepared(select(_MT.message_template, _MT.web_hook_url, _MT.headers,
                                _MT.cookies).where(_MT.id == bindparam("b_id")))


def legacy_package_fields(session: Session, task_id: str) -> dict[str, Any]:
    """What a we-mp-rss child reads from a package besides ours (its worker fails with a
    KeyError without them): the task's template, webhook URL, and headers and cookies as the
    original stored them (a JSON object string; ``k=v; k2=v2``). Legacy nodes only: these
    may carry tokens, and new children never need them (the parent sends notifications)."""
    task = _TASK_WEBHOOK.execute(session.connection(), {"b_id": task_id}).first()
    if task is None:
        return {"message_template": None, "web_hook_url": None, "headers": None,
                "cookies": None}
    headers = json.dumps(task.headers, ensure_ascii=False) if task.headers else None
    return {"message_template": task.message_template, "web_hook_url": task.web_hook_url,
            "headers": headers, "cookies": task.cookies}


def package(session: Session, alloc: AllocationRow, now: datetime, *,
            legacy: bool = False) -> dict[str, Any]:
    """The task package of PROTOCOL.md for a claimed allocation (``legacy``: plus the
    fields a we-mp-rss child needs, see ``legacy_package_fields``)."""
    if hasattr(alloc, "package_feeds"):  # returned by the claim (PostgreSQL)
        feeds = {feed["id"]: feed for feed in alloc.package_feeds or []}
    else:
        feeds = package_feeds(session, list(alloc.feed_ids or []))
    if hasattr(alloc, "task_message_type"):  # returned by the claim (see _TASK_COLUMNS)
        message_type, cron_exp = alloc.task_message_type, alloc.task_cron_exp
    else:
        task = _TASK_SCHEDULE.execute(session.connection(), {"b_id": alloc.task_id}).first()
        message_type, cron_exp = (task.message_type, task.cron_exp) if task else (None, None)
    ttl = 0
    if alloc.lease_expires_at:
        ttl = max(0, int((alloc.lease_expires_at - now).total_seconds()))
    return {
        "allocation_id": alloc.id, "task_id": alloc.task_id, "task_name": alloc.task_name,
        "schedule_run_id": alloc.schedule_run_id, "attempt": alloc.attempt, "epoch": alloc.epoch,
        "lease": {"expires_at": isoformat_z(alloc.lease_expires_at), "ttl": ttl},
        "message_type": message_type if message_type is not None else 0,  # task deleted
        "cron_exp": cron_exp,
        "feeds": [feeds[f] for f in alloc.feed_ids or [] if f in feeds],
        "dispatched_at": isoformat_z(alloc.dispatched_at),
        "protocol": PROTOCOL_VERSION,
        **(legacy_package_fields(session, alloc.task_id) if legacy else {}),
    }


def heartbeat(session: Session, now: datetime, node: Node | NodeRow, body: HeartbeatIn,
              settings: Settings) -> dict[str, Any]:
    """Mark the node alive and renew the leases of the allocations it still holds.

    ``cancel`` lists the ids it reported running that it no longer holds (lease expired and
    handed on, or finished elsewhere): the child must drop that work.
    """
    # A Core UPDATE, not attribute changes: the node is a row here (see nodes.NodeRow).
    seen: dict[str, Any] = {"last_heartbeat_at": now, "updated_at": now}
    for name in ("hostname", "version", "callback_url"):
        if getattr(body, name) is not None:
            seen[name] = getattr(body, name)
    session.connection().execute(update(_NODES).where(_N.id == node.id).values(seen))
    if isinstance(node, Node):
        # An ORM object (a library caller's): keep it in step, or flushing its other changes
        # (e.g. after ``session.merge``) would write the old values back over this UPDATE.
        for name, value in seen.items():
            setattr(node, name, value)
    running = list(dict.fromkeys(body.running))
    cancel: list[str] = []
    if node.legacy and not running:
        # A we-mp-rss child's heartbeat names no allocation: it renews every lease the node
        # holds, so a scrape longer than one lease keeps its work (and its upload); but
        # not past parent.legacy_max_hold after the claim, as its sync service may have
        # dropped the allocation silently.
        held_since = now - timedelta(seconds=settings.parent.legacy_max_hold)
        session.execute(update(Allocation).where(
            Allocation.node_id == node.id, is_active(Allocation.status),
            Allocation.claimed_at >= held_since)
            .values(lease_expires_at=now + timedelta(seconds=lease_ttl(settings)))
            .execution_options(synchronize_session=False))
    if running:
        expires = now + timedelta(seconds=lease_ttl(settings))
        session.execute(update(Allocation).where(
            Allocation.id.in_(running), Allocation.node_id == node.id,
            Allocation.status.in_(ACTIVE_STATES)).values(lease_expires_at=expires)
            .execution_options(synchronize_session=False))
        held = set(session.scalars(select(Allocation.id).where(
            Allocation.id.in_(running), Allocation.node_id == node.id,
            Allocation.status.in_(ACTIVE_STATES))))
        cancel = [a for a in running if a not in held]
    return {"status": "alive", "node_id": node.id, "node_name": node.name,
            "server_time": isoformat_z(now), "heartbeat_interval": heartbeat_interval(settings),
            "lease_ttl": lease_ttl(settings), "cancel": cancel, "protocol": PROTOCOL_VERSION}


# --- owner writes ------------------------------------------------------------------------------
#
# task-status, upload-articles and report-completion are most of the parent's requests. Each
# is one conditional Core UPDATE (``WHERE id AND node_id AND status IN (claimed, executing)
# [AND epoch]``) that checks ownership, moves the state and renews the lease at once, instead
# of an ORM load ``FOR UPDATE``, attribute changes and a unit-of-work flush (about twice the
# server CPU). The UPDATE takes the row lock, so concurrent writers (reaper, another claim)
# are serialised exactly as the former ``SELECT ... FOR UPDATE`` did. Only when it matches
# nothing does a second SELECT (``_diagnose``) find which protocol answer applies.
# The functions return an ``AllocationRow``, not an ORM object.



def _owner_conditions(with_epoch: bool) -> list[Any]:
    """The allocation ``b_id``, held by ``b_node``, still active (and at ``b_epoch``)."""
    where = [_A.id == bindparam("b_id"), _A.node_id == bindparam("b_node"),
             _A.status.in_(ACTIVE_STATES)]
    if with_epoch:  # clients that send no epoch (legacy children) are accepted as owner
        where.append(_A.epoch == bindparam("b_epoch"))
    return where


def _owner_update(values: dict[Any, Any], *, with_epoch: bool,
                  ordered: bool = False) -> Update:
    stmt = update(_ALLOC).where(*_owner_conditions(with_epoch))
    # ``ordered``: MySQL/MariaDB evaluate SET assignments left to right, seeing the values
    # already assigned; the dict's order puts columns read by a CASE before they change.
    return stmt.ordered_values(*values.items()) if ordered else stmt.values(values)


class _OwnerWrite:
    """One owner write, prebuilt: (epoch given / not given) x (columns returned, or none for
    databases without ``UPDATE ... RETURNING``), each a ``Prepared`` statement."""

    def __init__(self, values: dict[Any, Any], ordered: bool = False) -> None:
        self.updates = {e: _owner_update(values, with_epoch=e, ordered=ordered)
                        for e in (False, True)}
        self._prepared: dict[tuple[bool, tuple[str, ...] | None], Prepared] = {}

    def prepared(self, with_epoch: bool, returning: Sequence[Any] | None) -> Prepared:
        key = (with_epoch, tuple(c.key for c in returning) if returning is not None else None)
        stmt = self._prepared.get(key)
        if stmt is None:
            update_: Any = self.updates[with_epoch]
            if returning is not None:
                update_ = update_.returning(*returning)
            stmt = self._prepared[key] = Prepared(update_)
        return stmt


def _statements(values: dict[Any, Any], ordered: bool = False) -> _OwnerWrite:
    return _OwnerWrite(values, ordered)


_RENEW = {_A.lease_expires_at: _LEASE, _A.updated_at: _NOW}
_EXECUTING = _statements({
    # started_at first: it reads the status the next assignment changes (see _owner_update)
    _A.started_at: case((_A.status == CLAIMED, _NOW), else_=_A.started_at),
    _A.status: case((_A.status == CLAIMED, EXECUTING), else_=_A.status),
    **_RENEW}, ordered=True)
_FAILED = _statements({
    _A.status: FAILED, _A.error_message: bindparam("b_error"),
    _A.completed_at: _NOW, _A.lease_expires_at: None,
    _A.updated_at: _NOW})
# released: back to the pool; a voluntary release does not use up an attempt
_RELEASED = _statements({
    _A.status: PENDING, _A.attempt: case((_A.attempt > 0, _A.attempt - 1), else_=0),
    _A.lease_expires_at: None, _A.started_at: None, _A.updated_at: _NOW})
_TOUCH = _statements(_RENEW)
_COMPLETED_VALUES = {
    _A.status: COMPLETED, _A.result_summary: bindparam("b_summary", type_=JSON),
    # counters only grow: a completion never lowers what uploads or an earlier report counted
    _A.article_count: case((_A.article_count > bindparam("b_count"), _A.article_count),
                           else_=bindparam("b_count")),
    _A.error_message: None, _A.completed_at: _NOW, _A.lease_expires_at: None,
    _A.updated_at: _NOW}
_COMPLETED = _statements(_COMPLETED_VALUES)
_SET_ERROR = Prepared(update(_ALLOC).where(_A.id == bindparam("b_id"))
                      .values(error_message=bindparam("b_error")))


# The largest value of an INTEGER column on every supported database. Client numbers are
# bound into the owner writes (not compared in Python after a load): out-of-range ones must
# not reach the driver, which would fail (500) before the protocol answer (e.g. 404).
_INT_MAX = 2**31 - 1


def _owner_write(session: Session, now: datetime, node: Node | NodeRow, alloc_id: str,
                 epoch: int | None, settings: Settings, stmts: _OwnerWrite,
                 returning: Sequence[Any] = tuple(_A),
                 **params: Any) -> AllocationRow | None:
    """Run an owner write; the returned columns of the changed row, or None if the node may
    not write to this allocation now (then ``_diagnose`` tells why). A write that ends the
    allocation records it with ``runs.allocation_finished`` afterwards."""
    if epoch is not None and epoch > _INT_MAX:
        return None  # no stored epoch is that large (and the driver could not bind it)
    conn = session.connection()
    params.update(b_id=alloc_id, b_node=node.id, b_epoch=epoch, b_now=now,
                  b_lease=now + timedelta(seconds=lease_ttl(settings)))
    if conn.dialect.update_returning:  # PostgreSQL, SQLite >= 3.35
        return stmts.prepared(epoch is not None, returning).execute(conn, params).first()
    # MySQL/MariaDB: no UPDATE ... RETURNING. The row count is of matched rows (the driver's
    # FOUND_ROWS flag), and our UPDATE holds the row lock, so the read-back is ours.
    if stmts.prepared(epoch is not None, None).execute(conn, params).rowcount != 1:
        return None
    return conn.execute(select(*returning).where(_A.id == alloc_id)).first()


def _diagnose(session: Session, alloc_id: str, epoch: int | None, node: Node | NodeRow, *,
              allow_terminal: bool = False) -> AllocationRow:
    """Failure path of an owner write: the protocol's error for why it matched nothing, in
    the order the protocol checks it. Returns the row only for a terminal allocation the
    caller accepts (``allow_terminal``: an idempotent repeat)."""
    q = select(*_ALLOC.c).where(_A.id == alloc_id)
    if session.get_bind().dialect.name != "sqlite":
        q = q.with_for_update()  # a locking read sees the current row, not a stale snapshot
    alloc = session.connection().execute(q).first()
    if alloc is None:
        raise AllocationNotFound(f"allocation not found: {alloc_id}")
    if epoch is not None and epoch != alloc.epoch:
        raise LeaseSuperseded(f"allocation {alloc_id} was handed on (your epoch {epoch}, "
                              f"current {alloc.epoch}); drop this work")
    if alloc.node_id != node.id:
        raise NotOwner(f"allocation {alloc_id} is not held by this node")
    if alloc.status == PENDING:
        raise LeaseSuperseded(f"the lease on allocation {alloc_id} expired or was released; "
                              "drop this work")
    if alloc.status in TERMINAL_STATES:
        if not allow_terminal:
            raise InvalidTransition(f"allocation {alloc_id} is already {alloc.status}")
        return alloc
    # Active, owned, epoch matching: the UPDATE would have matched. Only an unknown state
    # (a manual database edit) gets here.
    raise InvalidTransition(f"allocation {alloc_id} is in an unexpected state {alloc.status}")


def set_status(session: Session, now: datetime, node: Node | NodeRow, body: TaskStatusIn,
               settings: Settings) -> AllocationRow:
    args = (session, now, node, body.allocation_id, body.epoch, settings)
    if body.status == "completed":
        # we-mp-rss's children may finish an allocation this way; ours send the per-feed
        # results with report-completion, which this stands for (with no results).
        if not node.legacy:
            raise InvalidInput("status 'completed' is only accepted from legacy (we-mp-rss) "
                               "nodes: finish an allocation with POST /report-completion, or "
                               "mark the node legacy ('cascade nodes legacy NAME on')",
                               field="status", code="validation_error")
        return report_completion(session, now, node, ReportCompletionIn(
            allocation_id=body.allocation_id, epoch=body.epoch), settings)
    if body.status == "executing":
        alloc = _owner_write(*args, _EXECUTING, returning=(_A.id, _A.status))
    elif body.status == "failed":
        error = body.error_message or "reported failed by the node"
        alloc = _owner_write(*args, _FAILED, b_error=error)
        if alloc is not None:
            allocation_finished(session, now, alloc.schedule_run_id, settings)
            if session.get_bind().dialect.name == "postgresql":
                alloc_facts.forget(session, alloc.id)
            insert_event(session, now, "task_failed", node_id=node.id, direction="inbound",
                         status="failed", task_id=alloc.task_id, allocation_id=alloc.id,
                         error=error)
    else:
        alloc = _owner_write(*args, _RELEASED)
        if alloc is not None:
            insert_event(session, now, "released", node_id=node.id, direction="inbound",
                         task_id=alloc.task_id, allocation_id=alloc.id)
    if alloc is not None:
        return alloc
    alloc = _diagnose(session, body.allocation_id, body.epoch, node, allow_terminal=True)
    if body.status == "failed" and alloc.status == FAILED:
        return alloc  # a repeated failure report changes nothing
    raise InvalidTransition(f"allocation {alloc.id} is already {alloc.status}; "
                            f"it cannot become {body.status}")


def _article_rows(body: UploadArticlesIn, feeds: Sequence[str], allocation_id: str,
                  settings: Settings) -> list[tuple[str, ArticleIn]]:
    """The uploaded articles with their feeds, checked against the allocation's feeds and the
    size limits; the first bad article raises."""
    limits = settings.parent.limits
    rows = []
    for i, article in enumerate(body.articles):
        feed_id = article.source_feed_id or body.feed_id or (feeds[0] if len(feeds) == 1 else None)
        if not feed_id:
            raise InvalidInput(f"articles[{i}]: feed_id (or mp_id) is required when the "
                               "allocation has several feeds", field=f"articles[{i}].feed_id",
                               code="validation_error")
        if feed_id not in feeds:
            raise InvalidInput(f"articles[{i}]: feed {feed_id!r} is not part of allocation "
                               f"{allocation_id}", field=f"articles[{i}].feed_id",
                               code="validation_error")
        for name in ("content", "description"):
            value = getattr(article, name)
            if value is not None and len(value) > limits.max_content_length:
                raise InvalidInput(f"articles[{i}].{name}: longer than "
                                   f"{limits.max_content_length} characters "
                                   "(parent.limits.max_content_length)",
                                   field=f"articles[{i}].{name}", code="validation_error")
        rows.append((feed_id, article))
    return rows


@lru_cache(maxsize=2)
def _pg_upload(with_epoch: bool) -> Prepared:
    """PostgreSQL: an owner's upload as one statement. The owner's row is locked (as the
    lease renewal would), the articles not stored yet are inserted only if it was found, and
    the renewal and the new-article count are one UPDATE of that row. Returns one row (the
    new count) for the owner, none otherwise."""
    owner = select(_A.id).where(*_owner_conditions(with_epoch)).with_for_update().cte("owner")
    new = new_articles_cte(exists(select(owner.c.id)))
    added = select(func.count()).select_from(new).scalar_subquery()
    return Prepared(update(_ALLOC).where(_A.id == owner.c.id)
                    .values(lease_expires_at=_LEASE, updated_at=_NOW,
                            new_article_count=_A.new_article_count + added)
                    .returning(added.label("new")))


def _upload_in_one(session: Session, now: datetime, node: Node | NodeRow,
                   body: UploadArticlesIn, settings: Settings) -> tuple[int, int] | None:
    """PostgreSQL, for an allocation this process handed out (its feeds are known, see
    ``alloc_facts``): validate, then one statement. None when this path does not apply;
    a request with an invalid article takes the ordinary path too, which checks ownership
    first and so answers exactly as it always has."""
    facts = alloc_facts.recall(session, body.allocation_id)
    if facts is None or (body.epoch is not None and body.epoch > _INT_MAX):
        return None
    try:
        rows = _article_rows(body, facts.feed_ids, body.allocation_id, settings)
        unique = unique_articles(rows)
    except InvalidInput:
        return None
    shared = {"schedule_run_id": facts.schedule_run_id, "allocation_id": body.allocation_id,
              "node_id": node.id}
    result = _pg_upload(body.epoch is not None).execute(session.connection(), {
        "b_id": body.allocation_id, "b_node": node.id, "b_epoch": body.epoch, "b_now": now,
        "b_lease": now + timedelta(seconds=lease_ttl(settings)),
        "b_rows": pg_document(unique, now, shared)}).first()
    if result is None:
        _diagnose(session, body.allocation_id, body.epoch, node)  # raises
    return len(rows), int(result.new)


def upload_articles(session: Session, now: datetime, node: Node | NodeRow,
                    body: UploadArticlesIn, settings: Settings) -> tuple[int, int]:
    limits = settings.parent.limits
    if len(body.articles) > limits.max_articles_per_request:
        raise PayloadTooLarge(f"{len(body.articles)} articles in one request; the limit is "
                              f"{limits.max_articles_per_request} (parent.limits."
                              "max_articles_per_request): send smaller batches")
    if body.articles and session.get_bind().dialect.name == "postgresql":
        done = _upload_in_one(session, now, node, body, settings)
        if done is not None:
            return done
    # Ownership check and lease renewal first (the row lock is taken before the articles).
    alloc = _owner_write(session, now, node, body.allocation_id, body.epoch, settings, _TOUCH,
                         returning=(_A.id, _A.feed_ids, _A.schedule_run_id))
    if alloc is None:
        alloc = _diagnose(session, body.allocation_id, body.epoch, node)  # raises
    rows = _article_rows(body, list(alloc.feed_ids or []), alloc.id, settings)
    new = merge_articles(session, now, rows, schedule_run_id=alloc.schedule_run_id,
                         allocation_id=alloc.id, node_id=node.id)
    return len(rows), new


# A feed's fetch outcome; a failed fetch or a result without validators keeps the old ones.
_FEED_FETCHED = Prepared(
    update(_FEEDS).where(_FEEDS.c.id == bindparam("b_id"))
    .values(last_status=bindparam("b_status"), last_error=bindparam("b_error"),
            etag=func.coalesce(bindparam("b_etag"), _FEEDS.c.etag),
            last_modified=func.coalesce(bindparam("b_last_modified"), _FEEDS.c.last_modified),
            last_fetched_at=bindparam("b_now", type_=_FEEDS.c.last_fetched_at.type)))
_RESULTS = cast(Table, FeedResult.__table__)
_ARTICLES = cast(Table, Article.__table__)
_RESULT_KEYS = ["allocation_id", "schedule_run_id", "feed_id", "node_id", "status",
                "article_count", "error", "duration_ms", "created_at"]
# One row per feed result, its new-article count counted by the INSERT itself (articles this
# allocation stored first for the feed): no separate read before the insert.
_INSERT_RESULT = Prepared(insert(_RESULTS).from_select(
    [*_RESULT_KEYS, "new_article_count"],
    select(*[bindparam(f"b_{k}", type_=_RESULTS.c[k].type) for k in _RESULT_KEYS],
           select(func.count()).select_from(_ARTICLES).where(
               _ARTICLES.c.allocation_id == bindparam("b_allocation_id"),
               _ARTICLES.c.feed_id == bindparam("b_feed_id")).scalar_subquery())))


_EVENTS = cast(Table, Event.__table__)
_EVENT_KEYS = ["node_id", "operation", "direction", "status", "task_id", "allocation_id",
               "count", "error", "detail", "created_at"]


def _pg_completion_ctes(*gate: Any) -> tuple[Any, Any]:
    """PostgreSQL: a completion's feed results and its feeds' fetch outcomes, as two
    data-modifying CTEs (when ``gate`` holds). The results travel as one JSON document,
    expanded once (CTE ``r``) and read by both."""
    fc = _FEEDS.c
    rows = (func.json_to_recordset(bindparam("b_results", type_=postgresql.JSON))
            .table_valued(column("feed_id", String()), column("status", String()),
                          column("article_count", Integer()), column("error", Text()),
                          column("duration_ms", Integer()), column("last_error", Text()),
                          column("etag", fc.etag.type),
                          column("last_modified", fc.last_modified.type))
            .render_derived(name="rows", with_types=True))
    r = select(*rows.c).where(*gate).cte("r")
    now = bindparam("b_now", type_=_RESULTS.c.created_at.type)
    new_count = (select(func.count()).select_from(_ARTICLES)
                 .where(_ARTICLES.c.allocation_id == bindparam("b_allocation_id"),
                        _ARTICLES.c.feed_id == r.c.feed_id).scalar_subquery())
    given = {"allocation_id": bindparam("b_allocation_id", type_=_RESULTS.c.allocation_id.type),
             "schedule_run_id": bindparam("b_schedule_run_id",
                                          type_=_RESULTS.c.schedule_run_id.type),
             "node_id": bindparam("b_node_id", type_=_RESULTS.c.node_id.type),
             "created_at": now}
    results = insert(_RESULTS).from_select(
        [*_RESULT_KEYS, "new_article_count"],
        select(*[given[k] if k in given else r.c[k] for k in _RESULT_KEYS], new_count)
    ).cte("results")
    feeds = update(_FEEDS).where(fc.id == r.c.feed_id,
                                 fc.id == _any_of(select(r.c.feed_id))).values(
        last_status=r.c.status, last_error=r.c.last_error,
        etag=func.coalesce(r.c.etag, fc.etag),
        last_modified=func.coalesce(r.c.last_modified, fc.last_modified),
        last_fetched_at=now).cte("fetched")
    return results, feeds


def _pg_record_completion() -> Prepared:
    """PostgreSQL: a completion's feed results, fetch outcomes and event in one statement
    (three round trips before)."""
    event = insert(_EVENTS).values(
        {k: bindparam(f"e_{k}", type_=_EVENTS.c[k].type) for k in _EVENT_KEYS})
    return Prepared(event.add_cte(*_pg_completion_ctes()))


@lru_cache(maxsize=2)
def _pg_complete(with_epoch: bool) -> Prepared:
    """PostgreSQL: an owner's completion as one statement, for an allocation whose feeds
    are known beforehand (see ``_complete_in_one``): the owner write (CTE ``done``, with
    the error known in advance), then, only if it matched, the results, fetch outcomes and
    the event, whose count and detail are the completed row's. Returns the completed row, or
    no row when the caller may not complete it."""
    values = {**_COMPLETED_VALUES, _A.error_message: bindparam("b_error", type_=Text())}
    done = _owner_update(values, with_epoch=with_epoch).returning(*_ALLOC.c).cte("done")
    gate = exists(select(done.c.id))
    event_values = {k: bindparam(f"e_{k}", type_=_EVENTS.c[k].type) for k in _EVENT_KEYS
                    if k not in ("task_id", "allocation_id", "count", "detail")}
    event = insert(_EVENTS).from_select(
        [*event_values, "task_id", "allocation_id", "count", "detail"],
        select(*event_values.values(), done.c.task_id, done.c.id, done.c.article_count,
               done.c.result_summary)).cte("event")
    return Prepared(select(*done.c).add_cte(*_pg_completion_ctes(gate), event))


_PG_RECORD_COMPLETION = _pg_record_completion()


# MySQL/MariaDB: the driver sends an executemany of a plain INSERT ... VALUES as one
# multi-row INSERT, but runs an INSERT ... SELECT once per row (a round trip each): the new
# counts are read first, in one query, instead.
_NEW_BY_FEED = Prepared(select(_ARTICLES.c.feed_id, func.count())
                        .where(_ARTICLES.c.allocation_id == bindparam("b_id"))
                        .group_by(_ARTICLES.c.feed_id))
_INSERT_RESULT_ROWS = Prepared(insert(_RESULTS), column_keys=[
    *_RESULT_KEYS, "new_article_count"])


def _insert_results(conn: Any, alloc: AllocationRow, node_id: str, now: datetime,
                    results: list[dict[str, Any]]) -> None:
    """SQLite and MySQL/MariaDB: one feed_results row per result (PostgreSQL: see
    ``_pg_record_completion``)."""
    rows = [{"allocation_id": alloc.id, "schedule_run_id": alloc.schedule_run_id,
             "feed_id": r["feed_id"], "node_id": node_id, "status": r["status"],
             "article_count": r["article_count"], "error": r["error"],
             "duration_ms": r["duration_ms"], "created_at": now} for r in results]
    if conn.dialect.name == "sqlite":  # in process: counted by each row's own INSERT
        _INSERT_RESULT.executemany(conn, [{f"b_{k}": v for k, v in row.items()}
                                          for row in rows])
        return
    new_by_feed = dict(_NEW_BY_FEED.execute(conn, {"b_id": alloc.id}).all())
    _INSERT_RESULT_ROWS.executemany(conn, [
        {**row, "new_article_count": int(new_by_feed.get(row["feed_id"], 0))} for row in rows])


def _summary(body: ReportCompletionIn) -> dict[str, Any]:
    counts = {"success": 0, "failed": 0, "not_modified": 0}
    for r in body.results:
        counts[r.status] += 1
    return {"feeds": len(body.results), **counts}


def _kept_results(body: ReportCompletionIn, feeds: Sequence[str]
                  ) -> tuple[list[dict[str, Any]], str | None, str]:
    """The results to store (first per feed, feeds of the allocation only), the error the
    allocation keeps, and the completion event's status."""
    allowed = set(feeds)
    errors = []
    results: list[dict[str, Any]] = []
    seen: set[str] = set()
    for r in body.results:
        fid = r.source_feed_id
        if fid not in allowed or fid in seen:
            continue  # results for feeds outside the allocation are ignored, not stored
        seen.add(fid)
        ok_ = r.status != "failed"
        # A failed fetch, or a result without validators, keeps the feed's old validators.
        results.append({"feed_id": fid, "status": r.status, "article_count": r.article_count,
                        "error": r.error, "duration_ms": r.duration_ms,
                        "last_error": None if ok_ else r.error,
                        "etag": r.etag if ok_ else None,
                        "last_modified": r.last_modified if ok_ else None})
        if not ok_:
            errors.append(f"{fid}: {r.error or 'failed'}")
    error = "; ".join(errors)[:4000] if errors else None
    status = "failed" if errors and len(errors) == len(seen) else "ok"
    return results, error, status


def _complete_in_one(session: Session, now: datetime, node: Node | NodeRow,
                     body: ReportCompletionIn, settings: Settings) -> AllocationRow | None:
    """PostgreSQL, for an allocation this process handed out: one statement. None when this
    path does not apply or the write matched nothing (the ordinary path then finds out why,
    and answers an idempotent repeat)."""
    facts = alloc_facts.recall(session, body.allocation_id)
    if facts is None or (body.epoch is not None and body.epoch > _INT_MAX):
        return None
    results, error, status = _kept_results(body, facts.feed_ids)
    alloc = _pg_complete(body.epoch is not None).execute(session.connection(), {
        "b_id": body.allocation_id, "b_node": node.id, "b_epoch": body.epoch, "b_now": now,
        "b_summary": _summary(body), "b_count": body.article_count, "b_error": error,
        "b_results": results, "b_allocation_id": body.allocation_id,
        "b_schedule_run_id": facts.schedule_run_id, "b_node_id": node.id,
        "e_node_id": node.id, "e_operation": "report_completion", "e_direction": "inbound",
        "e_status": status, "e_error": error, "e_created_at": now}).first()
    if alloc is None:
        return None
    allocation_finished(session, now, alloc.schedule_run_id, settings)
    alloc_facts.forget(session, alloc.id)
    return alloc


def report_completion(session: Session, now: datetime, node: Node | NodeRow,
                      body: ReportCompletionIn, settings: Settings) -> AllocationRow:
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        done = _complete_in_one(session, now, node, body, settings)
        if done is not None:
            return done
    alloc = _owner_write(session, now, node, body.allocation_id, body.epoch, settings,
                         _COMPLETED, b_summary=_summary(body),
                         b_count=body.article_count)
    if alloc is None:
        alloc = _diagnose(session, body.allocation_id, body.epoch, node, allow_terminal=True)
        if alloc.status == COMPLETED:
            return alloc  # idempotent: a repeat gets the same answer and changes nothing
        raise InvalidTransition(f"allocation {alloc.id} is already {alloc.status}; "
                                "it cannot be completed")
    results, error, status = _kept_results(body, alloc.feed_ids or [])
    event = {"node_id": node.id, "operation": "report_completion", "direction": "inbound",
             "status": status, "task_id": alloc.task_id, "allocation_id": alloc.id,
             "count": alloc.article_count, "error": error, "detail": alloc.result_summary}
    if conn.dialect.name == "postgresql":
        _PG_RECORD_COMPLETION.execute(conn, {
            "b_results": results, "b_now": now, "b_allocation_id": alloc.id,
            "b_schedule_run_id": alloc.schedule_run_id, "b_node_id": node.id,
            "e_created_at": now, **{f"e_{k}": v for k, v in event.items()}})
    else:
        if results:  # Core statements: one executemany each, not an ORM object per feed
            _insert_results(conn, alloc, node.id, now, results)
            _FEED_FETCHED.executemany(conn, [{
                "b_id": r["feed_id"], "b_status": r["status"], "b_error": r["last_error"],
                "b_etag": r["etag"], "b_last_modified": r["last_modified"], "b_now": now}
                for r in results])
        insert_event(session, now, **event)
    if error is not None:  # rarely taken
        _SET_ERROR.execute(conn, {"b_id": alloc.id, "b_error": error})
        alloc = conn.execute(select(*_ALLOC.c).where(_A.id == alloc.id)).one()
    allocation_finished(session, now, alloc.schedule_run_id, settings)
    if conn.dialect.name == "postgresql":  # only PostgreSQL's claims remember facts
        alloc_facts.forget(session, alloc.id)
    return alloc


def allocation_dict(alloc: Allocation, node_name: str | None) -> dict[str, Any]:
    return {
        "id": alloc.id, "task_id": alloc.task_id, "task_name": alloc.task_name,
        "node_id": alloc.node_id, "node_name": node_name, "target_node_id": alloc.target_node_id,
        "feed_ids": list(alloc.feed_ids or []), "status": alloc.status,
        "attempt": alloc.attempt, "max_attempts": alloc.max_attempts, "epoch": alloc.epoch,
        "lease_expires_at": isoformat_z(alloc.lease_expires_at),
        "result_summary": alloc.result_summary, "error_message": alloc.error_message,
        "dispatched_at": isoformat_z(alloc.dispatched_at),
        "claimed_at": isoformat_z(alloc.claimed_at), "started_at": isoformat_z(alloc.started_at),
        "completed_at": isoformat_z(alloc.completed_at),
        "schedule_run_id": alloc.schedule_run_id, "article_count": alloc.article_count,
        "new_article_count": alloc.new_article_count,
        "created_at": isoformat_z(alloc.created_at), "updated_at": isoformat_z(alloc.updated_at),
    }


def list_allocations(session: Session, *, task_id: str | None = None,
                     node_id: str | None = None, status: str | None = None,
                     schedule_run_id: str | None = None, limit: int = 50,
                     offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    conds = []
    if task_id:
        conds.append(Allocation.task_id == task_id)
    if node_id:
        node_ids = select(Node.id).where(or_(Node.id == node_id, Node.name == node_id))
        conds.append(Allocation.node_id.in_(node_ids))
    if status:
        conds.append(Allocation.status == status)
    if schedule_run_id:
        conds.append(Allocation.schedule_run_id == schedule_run_id)
    where = and_(*conds) if conds else None
    count_q = select(func.count()).select_from(Allocation)
    q = select(Allocation, Node.name).outerjoin(Node, Node.id == Allocation.node_id)
    if where is not None:
        count_q = count_q.where(where)
        q = q.where(where)
    total = int(session.scalar(count_q) or 0)
    rows = session.execute(q.order_by(Allocation.created_at.desc(), Allocation.id)
                           .limit(limit).offset(offset)).all()
    return [allocation_dict(a, name) for a, name in rows], total


def pending_counts(session: Session, now: datetime, settings: Settings) -> dict[str, Any]:
    by_status = dict(session.execute(select(Allocation.status, func.count())
                                     .group_by(Allocation.status)).all())
    day = datetime(now.year, now.month, now.day, tzinfo=UTC)
    today = dict(session.execute(select(Allocation.status, func.count()).where(
        Allocation.completed_at >= day).group_by(Allocation.status)).all())
    nodes = node_repo.list_nodes(session)
    online = sum(1 for n in nodes if node_repo.is_online(n, now, settings.parent.offline_after))
    return {
        "pending": int(by_status.get(PENDING, 0)),
        "claimed": int(by_status.get(CLAIMED, 0)),
        "executing": int(by_status.get(EXECUTING, 0)),
        "in_progress": int(by_status.get(CLAIMED, 0)) + int(by_status.get(EXECUTING, 0)),
        "completed_today": int(today.get(COMPLETED, 0)),
        "failed_today": int(today.get(FAILED, 0)) + int(today.get("timeout", 0)),
        "online_nodes": online,
        "total_nodes": len(nodes),
        "by_status": {k: int(v) for k, v in by_status.items()},
    }
