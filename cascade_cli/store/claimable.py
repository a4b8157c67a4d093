"""Why a node can or cannot claim work, computed read-only from the store (guide problem 3).

Used by the parent's ``GET /claimable`` node route (``parent/routes_doctor.py``), which the
child's doctor calls, and by the parent's own doctor for every online node. Nothing here
changes a row: doctor must never take work it will not do.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cascade_cli.clock import isoformat_z
from cascade_cli.config import Settings
from cascade_cli.store.allocations import orphaned_targets, running_count
from cascade_cli.store.models import ACTIVE_STATES, PENDING, Allocation, Node
from cascade_cli.store.nodes import NodeRow

AVAILABLE = "available"
NOTHING_DISPATCHED = "nothing_dispatched"
ALL_TAKEN = "all_taken"
AT_CAPACITY = "at_capacity"
TARGETED_ELSEWHERE = "targeted_elsewhere"
NODE_DISABLED = "node_disabled"

MESSAGES = {
    AVAILABLE: "work is waiting that this node can claim",
    NOTHING_DISPATCHED: "nothing is pending: no task was dispatched (or every allocation is "
                        "finished)",
    ALL_TAKEN: "every dispatched allocation is already held by other nodes",
    AT_CAPACITY: "this node already holds as many allocations as its capacity allows",
    TARGETED_ELSEWHERE: "the pending allocations are reserved for other online nodes (feed "
                        "affinity); they open to every node when those go offline",
    NODE_DISABLED: "this node is disabled on the parent",
}


def _count(s: Session, *where: Any) -> int:
    return int(s.scalar(select(func.count()).select_from(Allocation).where(*where)) or 0)


def claimable_report(s: Session, now: datetime, node: Node | NodeRow,
                     settings: Settings) -> dict[str, Any]:
    """Counts and the first reason that explains them. ``claimable`` > 0 iff reason is available.

    Uses the claim rule of ``store.allocations`` itself: a pending allocation can go to a node
    when it is in the shared pool (no target), targeted at that node, or targeted at a node that
    is disabled, revoked, never seen or offline past ``offline_after + affinity_grace``; and the
    node is enabled and below its capacity.
    """
    orphans = orphaned_targets(s, now, settings, node.id)
    pending = Allocation.status == PENDING
    total = _count(s, pending)
    shared = _count(s, pending, Allocation.target_node_id.is_(None))
    here = _count(s, pending, Allocation.target_node_id == node.id)
    orphaned = _count(s, pending, Allocation.target_node_id.in_(orphans)) if orphans else 0
    reserved = total - shared - here - orphaned
    held = running_count(s, node.id)
    held_by_others = _count(s, Allocation.node_id != node.id,
                            Allocation.status.in_(ACTIVE_STATES))
    last_dispatch = s.scalar(select(func.max(Allocation.dispatched_at)))
    open_ = shared + here + orphaned
    room = max(node.max_capacity - held, 0)

    if not node.enabled:
        reason = NODE_DISABLED
    elif open_ > 0 and room > 0:
        reason = AVAILABLE
    elif open_ > 0:
        reason = AT_CAPACITY
    elif reserved > 0:
        reason = TARGETED_ELSEWHERE
    elif held_by_others > 0:
        reason = ALL_TAKEN
    else:
        reason = NOTHING_DISPATCHED
    reserved_for: list[str] = []
    if reserved:
        q = (select(Node.name).join(Allocation, Allocation.target_node_id == Node.id)
             .where(pending, Allocation.target_node_id != node.id).distinct().limit(10))
        reserved_for = [n for n in s.scalars(q) if n]
    return {
        "claimable": min(open_, room) if reason == AVAILABLE else 0,
        "reason": reason,
        "message": MESSAGES[reason],
        "node": {"id": node.id, "name": node.name, "enabled": node.enabled,
                 "capacity": node.max_capacity, "held": held},
        "pending": {"total": total, "shared": shared, "targeted_here": here,
                    "targeted_orphaned": orphaned, "targeted_elsewhere": reserved},
        "reserved_for": reserved_for,
        "held_by_other_nodes": held_by_others,
        "last_dispatch_at": isoformat_z(last_dispatch),
        "server_time": isoformat_z(now),
    }
