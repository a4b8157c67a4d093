"""Dispatch: turn a task's feeds into one run and its allocations.

A plain function of (session, now, settings): no server needed to test it.

How feeds are split (what the original only documented):
* a feed with a ``preferred_node`` goes, in batches, to allocations targeted at that node; if
  the node stays offline past ``parent.affinity_grace`` the claim query lets any node take them;
* the other feeds go to the shared pool, in batches no larger than ``parent.batch_size`` and
  small enough that every free capacity slot of the online nodes gets work (balance);
* missing, disabled and duplicate feeds are reported, never dropped silently;
* a task whose previous run is unfinished is skipped (overlap) unless forced or its overlap
  policy is ``allow``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from cascade_cli.clock import isoformat_z
from cascade_cli.config import Settings
from cascade_cli.store import feeds as feed_repo
from cascade_cli.store import nodes as node_repo
from cascade_cli.store import runs as run_repo
from cascade_cli.store.engine import after_commit
from cascade_cli.store.events import log_event
from cascade_cli.store.models import PENDING, MessageTask, Node, ScheduleRun, new_id
from cascade_cli.store.tasks import get_task, list_tasks

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger("cascade.dispatch")


@dataclass
class RunPlan:
    schedule_run_id: str
    task_id: str
    task_name: str
    allocations: int
    feeds: int
    targeted: dict[str, int] = field(default_factory=dict)  # node name -> allocations


class SkipReason(StrEnum):
    """Why dispatch made no run for a task. Callers decide by this, never by the message
    (which names the details: the run still open, the missing feeds...)."""

    DISABLED = "task_disabled"
    NO_FEEDS = "no_feeds"
    TOO_MANY_FEEDS = "too_many_feeds"
    PREVIOUS_RUN_UNFINISHED = "previous_run_unfinished"
    NO_USABLE_FEEDS = "no_usable_feeds"
    ALREADY_DISPATCHED = "already_dispatched"


@dataclass(frozen=True)
class Skip:
    task_id: str
    task_name: str
    reason: SkipReason
    message: str  # what the operator reads (the "reason" of the JSON answer)
    schedule_run_id: str | None = None  # the unfinished run, for PREVIOUS_RUN_UNFINISHED

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task_id": self.task_id, "task_name": self.task_name,
                               "reason": self.message}
        if self.schedule_run_id is not None:
            out["schedule_run_id"] = self.schedule_run_id
        return out


@dataclass
class DispatchResult:
    runs: list[RunPlan] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    online_nodes: int = 0
    online_capacity: int = 0

    @property
    def skipped(self) -> list[dict[str, Any]]:
        """The skips as the JSON answer and the CLI show them."""
        return [s.to_dict() for s in self.skips]

    def skip(self, task: MessageTask, reason: SkipReason, message: str,
             schedule_run_id: str | None = None) -> None:
        self.skips.append(Skip(task.id, task.name, reason, message, schedule_run_id))

    @property
    def allocations_created(self) -> int:
        return sum(r.allocations for r in self.runs)

    @property
    def message(self) -> str:
        if not self.runs:
            return "nothing dispatched" + (f": {len(self.skips)} task(s) skipped"
                                           if self.skips else ": no enabled task")
        text = f"dispatched {self.allocations_created} allocation(s) in {len(self.runs)} run(s)"
        if self.online_nodes == 0:
            text += "; no child node is online, the allocations wait until one claims them"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": [{"schedule_run_id": r.schedule_run_id, "task_id": r.task_id,
                      "task_name": r.task_name, "allocations": r.allocations, "feeds": r.feeds,
                      "targeted": r.targeted} for r in self.runs],
            "allocations_created": self.allocations_created,
            "online_nodes": self.online_nodes,
            "online_capacity": self.online_capacity,
            "skipped": self.skipped,
            "warnings": self.warnings,
            "message": self.message,
        }


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def shared_batch_size(n_feeds: int, batch_size: int, capacity_slots: int) -> int:
    """Feeds per shared allocation: at most ``batch_size``, fewer when that would leave free
    capacity slots idle (10 feeds over 2 nodes of capacity 2 -> 4 allocations, not 1)."""
    if n_feeds <= 0:
        return batch_size
    if capacity_slots <= 0:
        return batch_size
    return max(1, min(batch_size, math.ceil(n_feeds / capacity_slots)))


def _dispatch_task(session: Session, now: datetime, settings: Settings, task: MessageTask,
                   result: DispatchResult, online: dict[str, Node], *, force: bool,
                   trigger: str, scheduled_for: datetime | None) -> None:
    feed_ids = list(dict.fromkeys(task.mps_id or []))
    if not feed_ids:
        result.skip(task, SkipReason.NO_FEEDS, "task has no feeds (mps_id is empty)")
        return
    if len(feed_ids) > settings.parent.limits.max_feeds_per_task:
        result.skip(task, SkipReason.TOO_MANY_FEEDS,
                    f"task has {len(feed_ids)} feeds, more than "
                    f"parent.limits.max_feeds_per_task")
        return
    if not force and task.overlap_policy != "allow":
        unfinished = run_repo.unfinished_run(session, task.id)
        if unfinished:
            result.skip(task, SkipReason.PREVIOUS_RUN_UNFINISHED,
                        f"previous run {unfinished} is unfinished "
                        "(use --force, or overlap_policy: allow)", unfinished)
            return

    found = feed_repo.dispatch_facts(session, feed_ids)
    missing = [f for f in feed_ids if f not in found]
    disabled = [f for f in feed_ids if f in found and found[f][0] != 1]
    usable = [f for f in feed_ids if f in found and found[f][0] == 1]
    if missing or disabled:
        result.warnings.append({"task_id": task.id, "task_name": task.name,
                                "missing_feeds": missing, "disabled_feeds": disabled})
    if not usable:
        reason = "none of its feeds exist or are enabled"
        if missing:
            reason += f" (missing: {', '.join(missing[:10])}{'...' if len(missing) > 10 else ''})"
        result.skip(task, SkipReason.NO_USABLE_FEEDS, reason)
        log_event(session, now, "dispatch", status="failed", task_id=task.id, error=reason)
        after_commit(session, lambda: log.warning("dispatch of task %s skipped: %s",
                                                  task.name, reason))
        return

    run = run_repo.start_run(session, now, task_id=task.id,
                             scheduled_for=scheduled_for or now, trigger=trigger)
    if run is None:
        result.skip(task, SkipReason.ALREADY_DISPATCHED, "this tick was already dispatched")
        return

    by_node: dict[str, list[str]] = {}
    shared: list[str] = []
    for feed_id in usable:
        preferred = found[feed_id][1]
        if preferred:
            by_node.setdefault(preferred, []).append(feed_id)
        else:
            shared.append(feed_id)

    max_attempts = settings.parent.max_attempts
    batch = settings.parent.batch_size
    rows: list[dict[str, Any]] = []

    def add(feeds: list[str], target: str | None) -> None:
        rows.append({"id": new_id(), "schedule_run_id": run.id, "task_id": task.id,
                     "task_name": task.name, "target_node_id": target, "node_id": None,
                     "feed_ids": feeds, "status": PENDING, "attempt": 0,
                     "max_attempts": max_attempts, "epoch": 0, "article_count": 0,
                     "new_article_count": 0, "dispatched_at": now, "created_at": now,
                     "updated_at": now})

    plan = RunPlan(run.id, task.id, task.name, 0, len(usable))
    names = node_repo.names_by_id(session, list(by_node))
    for node_id, ids in by_node.items():
        node = online.get(node_id)
        size = shared_batch_size(len(ids), batch, node.max_capacity if node else 1)
        for chunk in _chunks(ids, size):
            add(chunk, node_id)
        plan.targeted[names.get(node_id, node_id)] = math.ceil(len(ids) / size)
    size = shared_batch_size(len(shared), batch, result.online_capacity)
    for chunk in _chunks(shared, size):
        add(chunk, None)

    run_repo.add_allocations(session, run, rows)
    plan.allocations = len(rows)
    result.runs.append(plan)
    log_event(session, now, "dispatch", task_id=task.id, count=len(rows),
              detail={"schedule_run_id": run.id, "feeds": len(usable), "trigger": trigger,
                      "missing_feeds": len(missing), "disabled_feeds": len(disabled)})
    line = (f"dispatched task {task.name} ({trigger}): run {run.id}, {len(rows)} allocations, "
            f"{len(usable)} feeds")
    if plan.targeted:
        line += ", targeted " + ", ".join(f"{k}:{v}" for k, v in plan.targeted.items())
    if missing or disabled:
        line += f" ({len(missing)} feeds missing, {len(disabled)} disabled)"
    after_commit(session, lambda: log.info("%s", line))


def dispatch(session: Session, now: datetime, settings: Settings, *, task_id: str | None = None,
             force: bool = False, trigger: str = "manual",
             scheduled_for: datetime | None = None) -> DispatchResult:
    """Create one run per task (all enabled tasks, or ``task_id``) and its allocations."""
    result = DispatchResult()
    offline_after = settings.parent.offline_after
    online = {n.id: n for n in node_repo.list_nodes(session)
              if node_repo.is_online(n, now, offline_after)}
    result.online_nodes = len(online)
    result.online_capacity = sum(n.max_capacity for n in online.values())
    if task_id:
        task = get_task(session, task_id)
        if task.status != 1 and not force:
            result.skip(task, SkipReason.DISABLED,
                        "task is disabled (enable it, or use --force)")
            return result
        tasks = [task]
    else:
        tasks = list_tasks(session, enabled_only=True)
    for task in tasks:
        _dispatch_task(session, now, settings, task, result, online, force=force,
                       trigger=trigger, scheduled_for=scheduled_for)
    return result


def run_dict(run: ScheduleRun) -> dict[str, Any]:
    return {"schedule_run_id": run.id, "task_id": run.task_id, "trigger": run.trigger,
            "status": run.status, "scheduled_for": isoformat_z(run.scheduled_for),
            "allocations": run.allocation_count, "created_at": isoformat_z(run.created_at),
            "finished_at": isoformat_z(run.finished_at)}
