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

What differs between the databases (the claim, the owner writes' RETURNING or read-back, the
article merge, recording a completion) is done by the session's dialect (``dialects``); this
module holds the logic they share. Rows are ``dialects.base``'s NamedTuples.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)
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
from cascade_cli.store import dialects
from cascade_cli.store import nodes as node_repo
from cascade_cli.store.alloc_facts import AllocationFacts
from cascade_cli.store.articles import merge_articles, unique_articles
from cascade_cli.store.dialects.base import (
    ALLOC,
    COMPLETED_VALUES,
    LEASE,
    MT,
    NODES,
    NOW,
    ORPHANS,
    RUNNING,
    A,
    AllocationRow,
    ClaimedRow,
    OneStatementWrites,
    OwnerWrite,
    R,
    StatusRow,
    UploadOwnerRow,
    read_unlocked,
)
from cascade_cli.store.events import insert_event
from cascade_cli.store.models import (
    ACTIVE_STATES,
    CLAIMED,
    COMPLETED,
    EXECUTING,
    FAILED,
    PENDING,
    TERMINAL_STATES,
    Allocation,
    Node,
    is_active,
)
from cascade_cli.store.nodes import NodeRow
from cascade_cli.store.prepared import Prepared
from cascade_cli.store.runs import allocation_finished

__all__ = ["AllocationNotFound", "AllocationRow", "ClaimedRow", "StatusRow", "allocation_dict",
           "check_upload_size", "claim", "heartbeat", "heartbeat_interval", "lease_ttl",
           "list_allocations", "orphaned_targets", "package", "pending_counts",
           "report_completion", "running_count", "set_status", "upload_articles"]


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


def running_count(session: Session, node_id: str) -> int:
    """How many allocations the node holds (see ``dialects.base.running_of_node``)."""
    return int(RUNNING.execute(session.connection(), {"b_node": node_id}).scalar() or 0)


def orphaned_targets(session: Session, now: datetime, settings: Settings,
                     me: str) -> list[str]:
    """Nodes whose targeted allocations anybody may take: disabled, or offline past grace."""
    return list(session.scalars(ORPHANS, {"b_node": me, "b_cutoff": _cutoff(now, settings)}))


def _cutoff(now: datetime, settings: Settings) -> datetime:
    return now - timedelta(seconds=settings.parent.offline_after + settings.parent.affinity_grace)


def claim(session: Session, now: datetime, node: Node | NodeRow, settings: Settings, *,
          max_count: int = 1) -> list[ClaimedRow]:
    """Claim up to ``max_count`` allocations within the node's free capacity, oldest first."""
    return dialects.of(session).claim(session, {
        "b_node": node.id, "b_cutoff": _cutoff(now, settings), "b_want": max_count,
        "b_capacity": node.max_capacity, "b_now": now,
        "b_lease": now + timedelta(seconds=lease_ttl(settings))})


_TASK_WEBHOOK = Prepared(select(MT.message_template, MT.web_hook_url, MT.headers,
                                MT.cookies).where(MT.id == bindparam("b_id")))


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


def package(session: Session, alloc: ClaimedRow, now: datetime, *,
            legacy: bool = False) -> dict[str, Any]:
    """The task package of PROTOCOL.md for a claimed allocation (``legacy``: plus the
    fields a we-mp-rss child needs, see ``legacy_package_fields``)."""
    feeds = dialects.of(session).package_feeds(session, alloc)
    ttl = 0
    if alloc.lease_expires_at:
        ttl = max(0, int((alloc.lease_expires_at - now).total_seconds()))
    message_type = alloc.task_message_type
    return {
        "allocation_id": alloc.id, "task_id": alloc.task_id, "task_name": alloc.task_name,
        "schedule_run_id": alloc.schedule_run_id, "attempt": alloc.attempt, "epoch": alloc.epoch,
        "lease": {"expires_at": isoformat_z(alloc.lease_expires_at), "ttl": ttl},
        "message_type": message_type if message_type is not None else 0,  # task deleted
        "cron_exp": alloc.task_cron_exp,
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
    session.connection().execute(update(NODES).where(NODES.c.id == node.id).values(seen))
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



_RENEW = {A.lease_expires_at: LEASE, A.updated_at: NOW}
_EXECUTING = OwnerWrite({
    # started_at first: it reads the status the next assignment changes (see owner_update)
    A.started_at: case((A.status == CLAIMED, NOW), else_=A.started_at),
    A.status: case((A.status == CLAIMED, EXECUTING), else_=A.status),
    **_RENEW}, ordered=True)
_FAILED = OwnerWrite({
    A.status: FAILED, A.error_message: bindparam("b_error"),
    A.completed_at: NOW, A.lease_expires_at: None,
    A.updated_at: NOW})
# released: back to the pool; a voluntary release does not use up an attempt
_RELEASED = OwnerWrite({
    A.status: PENDING, A.attempt: case((A.attempt > 0, A.attempt - 1), else_=0),
    A.lease_expires_at: None, A.started_at: None, A.updated_at: NOW})
_TOUCH = OwnerWrite(_RENEW)
_COMPLETED = OwnerWrite(COMPLETED_VALUES)
_SET_ERROR = Prepared(update(ALLOC).where(A.id == bindparam("b_id"))
                      .values(error_message=bindparam("b_error")))


# The largest value of an INTEGER column on every supported database. Client numbers are
# bound into the owner writes (not compared in Python after a load): out-of-range ones must
# not reach the driver, which would fail (500) before the protocol answer (e.g. 404).
_INT_MAX = 2**31 - 1


def _owner_params(now: datetime, node: Node | NodeRow, alloc_id: str, epoch: int | None,
                  settings: Settings) -> dict[str, Any]:
    return {"b_id": alloc_id, "b_node": node.id, "b_epoch": epoch, "b_now": now,
            "b_lease": now + timedelta(seconds=lease_ttl(settings))}


def _owner_write(session: Session, now: datetime, node: Node | NodeRow, alloc_id: str,
                 epoch: int | None, settings: Settings, write: OwnerWrite, row: type[R],
                 **params: Any) -> R | None:
    """Run an owner write; the changed row (as ``row``), or None if the node may not write
    to this allocation now (then ``_diagnose`` tells why). A write that ends the allocation
    records it with ``runs.allocation_finished`` afterwards."""
    if epoch is not None and epoch > _INT_MAX:
        return None  # no stored epoch is that large (and the driver could not bind it)
    params.update(_owner_params(now, node, alloc_id, epoch, settings))
    return dialects.of(session).owner_write(session.connection(), write, epoch is not None,
                                            row, params)


def _diagnose(session: Session, alloc_id: str, epoch: int | None, node: Node | NodeRow, *,
              allow_terminal: bool = False) -> AllocationRow:
    """Failure path of an owner write: the protocol's error for why it matched nothing, in
    the order the protocol checks it. Returns the row only for a terminal allocation the
    caller accepts (``allow_terminal``: an idempotent repeat)."""
    alloc = dialects.of(session).read_current(session.connection(), alloc_id)
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
               settings: Settings) -> AllocationRow | StatusRow:
    args = (session, now, node, body.allocation_id, body.epoch, settings)
    alloc: AllocationRow | StatusRow | None
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
        alloc = _owner_write(*args, _EXECUTING, StatusRow)
    elif body.status == "failed":
        error = body.error_message or "reported failed by the node"
        failed = alloc = _owner_write(*args, _FAILED, AllocationRow, b_error=error)
        if failed is not None:
            allocation_finished(session, now, failed.schedule_run_id)
            dialects.of(session).facts.forget(failed.id)
            insert_event(session, now, "task_failed", node_id=node.id, direction="inbound",
                         status="failed", task_id=failed.task_id, allocation_id=failed.id,
                         error=error)
    else:
        released = alloc = _owner_write(*args, _RELEASED, AllocationRow)
        if released is not None:
            dialects.of(session).facts.forget(released.id)  # back in the pool
            insert_event(session, now, "released", node_id=node.id, direction="inbound",
                         task_id=released.task_id, allocation_id=released.id)
    if alloc is not None:
        return alloc
    current = _diagnose(session, body.allocation_id, body.epoch, node, allow_terminal=True)
    if body.status == "failed" and current.status == FAILED:
        return current  # a repeated failure report changes nothing
    raise InvalidTransition(f"allocation {current.id} is already {current.status}; "
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



def _remembered(session: Session, allocation_id: str, epoch: int | None
                ) -> tuple[OneStatementWrites, AllocationFacts] | None:
    """The dialect's one-statement writes and what this process remembers of the allocation,
    when both exist (and the epoch can be bound at all)."""
    dialect = dialects.of(session)
    one_statement = dialect.one_statement
    if one_statement is None or (epoch is not None and epoch > _INT_MAX):
        return None
    facts = dialect.facts.recall(allocation_id)
    return None if facts is None else (one_statement, facts)


def _upload_in_one(session: Session, now: datetime, node: Node | NodeRow,
                   body: UploadArticlesIn, settings: Settings) -> tuple[int, int] | None:
    """For an allocation this process handed out (its feeds are known, see ``alloc_facts``),
    where the dialect has it: validate, then one statement. None when this path does not
    apply; a request with an invalid article takes the ordinary path too, which checks
    ownership first and so answers exactly as it always has."""
    remembered = _remembered(session, body.allocation_id, body.epoch)
    if remembered is None:
        return None
    one_statement, facts = remembered
    try:
        rows = _article_rows(body, facts.feed_ids, body.allocation_id, settings)
        unique = unique_articles(rows)
    except InvalidInput:
        return None
    shared = {"schedule_run_id": facts.schedule_run_id, "allocation_id": body.allocation_id,
              "node_id": node.id}
    new = one_statement.upload(
        session.connection(), body.epoch is not None,
        _owner_params(now, node, body.allocation_id, body.epoch, settings), unique, shared)
    if new is None:
        _diagnose(session, body.allocation_id, body.epoch, node)  # raises
    return len(rows), int(new or 0)


def check_upload_size(body: UploadArticlesIn, settings: Settings) -> None:
    """``parent.limits.max_articles_per_request``: the one rule, asked by the route before it
    takes a database thread and by ``upload_articles`` for every other caller."""
    limit = settings.parent.limits.max_articles_per_request
    if len(body.articles) > limit:
        raise PayloadTooLarge(f"{len(body.articles)} articles in one request; the limit is "
                              f"{limit} (parent.limits.max_articles_per_request): send "
                              "smaller batches")


def upload_articles(session: Session, now: datetime, node: Node | NodeRow,
                    body: UploadArticlesIn, settings: Settings) -> tuple[int, int]:
    check_upload_size(body, settings)
    if body.articles:
        done = _upload_in_one(session, now, node, body, settings)
        if done is not None:
            return done
    # Ownership check and lease renewal first (the row lock is taken before the articles).
    owner = _owner_write(session, now, node, body.allocation_id, body.epoch, settings, _TOUCH,
                         UploadOwnerRow)
    if owner is None:
        _diagnose(session, body.allocation_id, body.epoch, node)  # raises
        raise AssertionError("unreachable: _diagnose raises for a non-terminal answer")
    rows = _article_rows(body, list(owner.feed_ids or []), owner.id, settings)
    new = merge_articles(session, now, rows, schedule_run_id=owner.schedule_run_id,
                         allocation_id=owner.id, node_id=node.id)
    return len(rows), new


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
    """For an allocation this process handed out, where the dialect has it: one statement.
    None when this path does not apply or the write matched nothing (the ordinary path then
    finds out why, and answers an idempotent repeat)."""
    remembered = _remembered(session, body.allocation_id, body.epoch)
    if remembered is None:
        return None
    one_statement, facts = remembered
    results, error, status = _kept_results(body, facts.feed_ids)
    alloc = one_statement.complete(session.connection(), body.epoch is not None, {
        **_owner_params(now, node, body.allocation_id, body.epoch, settings),
        "b_summary": _summary(body), "b_count": body.article_count, "b_error": error,
        "b_results": results, "b_allocation_id": body.allocation_id,
        "b_schedule_run_id": facts.schedule_run_id, "b_node_id": node.id,
        "e_node_id": node.id, "e_operation": "report_completion", "e_direction": "inbound",
        "e_status": status, "e_error": error, "e_created_at": now})
    if alloc is None:
        return None
    allocation_finished(session, now, alloc.schedule_run_id)
    dialects.of(session).facts.forget(alloc.id)
    return alloc


def report_completion(session: Session, now: datetime, node: Node | NodeRow,
                      body: ReportCompletionIn, settings: Settings) -> AllocationRow:
    done = _complete_in_one(session, now, node, body, settings)
    if done is not None:
        return done
    alloc = _owner_write(session, now, node, body.allocation_id, body.epoch, settings,
                         _COMPLETED, AllocationRow, b_summary=_summary(body),
                         b_count=body.article_count)
    if alloc is None:
        alloc = _diagnose(session, body.allocation_id, body.epoch, node, allow_terminal=True)
        if alloc.status == COMPLETED:
            return alloc  # idempotent: a repeat gets the same answer and changes nothing
        raise InvalidTransition(f"allocation {alloc.id} is already {alloc.status}; "
                                "it cannot be completed")
    results, error, status = _kept_results(body, alloc.feed_ids or [])
    dialect = dialects.of(session)
    dialect.record_completion(session, alloc, node.id, now, results, {
        "node_id": node.id, "operation": "report_completion", "direction": "inbound",
        "status": status, "task_id": alloc.task_id, "allocation_id": alloc.id,
        "count": alloc.article_count, "error": error, "detail": alloc.result_summary})
    if error is not None:  # rarely taken
        conn = session.connection()
        _SET_ERROR.execute(conn, {"b_id": alloc.id, "b_error": error})
        alloc = read_unlocked(conn, alloc.id) or alloc
    allocation_finished(session, now, alloc.schedule_run_id)
    dialect.facts.forget(alloc.id)
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
