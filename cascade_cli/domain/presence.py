"""Node online/offline transitions, told in the parent's log.

A node is online while its last heartbeat is younger than ``parent.offline_after`` (the
same rule as ``cascade nodes list``). Nothing in the database marks the moment it changes,
so each parent process compares what it sees on every reaper pass with what it saw on the
previous one: one small read of the nodes table per pass, nothing on the request path. At
start a process tells which nodes are online; after that only changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from cascade_cli.clock import isoformat_z
from cascade_cli.store import nodes as node_repo

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger("cascade.nodes")


@dataclass(frozen=True)
class Transition:
    node_id: str
    name: str
    online: bool
    status: str  # node_status(): online, offline, disabled, revoked, never seen
    last_heartbeat_at: datetime | None


class Presence:
    """What one process last saw of each node (id -> online)."""

    def __init__(self) -> None:
        self._seen: dict[str, bool] | None = None

    @staticmethod
    def read(s: Session, now: datetime, offline_after: float) -> list[Transition]:
        """Every node's state now (a unit of work: reads only, safe to run again)."""
        out = []
        for n in node_repo.list_nodes(s):
            status = node_repo.node_status(n, now, offline_after)
            out.append(Transition(n.id, n.name, status == "online", status,
                                  n.last_heartbeat_at))
        return out

    def changes(self, snapshot: list[Transition]) -> list[Transition]:
        """The nodes whose online state differs from the previous snapshot (at the first
        one: the nodes online)."""
        first = self._seen is None
        before = self._seen or {}
        changed = [t for t in snapshot
                   if (t.online if first else before.get(t.node_id, False) != t.online)]
        self._seen = {t.node_id: t.online for t in snapshot}
        return changed


def log_transitions(changes: list[Transition], offline_after: float) -> None:
    for t in changes:
        seen = isoformat_z(t.last_heartbeat_at) or "never"
        if t.online:
            log.info("node %s online (last heartbeat %s)", t.name, seen)
        elif t.status == "offline":
            log.warning("node %s offline: no heartbeat for more than %gs (last %s)", t.name,
                        offline_after, seen)
        else:
            log.warning("node %s offline: %s", t.name, t.status)
