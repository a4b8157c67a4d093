"""What never changes about an allocation, remembered in the process that handed it out.

An allocation's feeds, run and task are fixed when dispatch creates it; only its state,
owner, lease and counters change afterwards. The parent remembers the fixed part of what it
claims, per database, so that an owner's later writes can be validated before they reach
the database and sent as one statement instead of a read-back and a write (see
``allocations.upload_articles``).

Safe with several parent processes and across restarts: an entry is never wrong, only
missing (another process claimed the allocation, or this one restarted), and a missing entry
means the ordinary path. Ownership, epoch and state are always checked by the database in
the statement itself. Bounded: the oldest entries go first, and a finished allocation is
forgotten.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, NamedTuple
from weakref import WeakKeyDictionary

from sqlalchemy.orm import Session

MAX_ENTRIES = 20_000  # far more than the work in flight of a large fleet (nodes x capacity)


class AllocationFacts(NamedTuple):
    feed_ids: tuple[str, ...]
    schedule_run_id: str
    task_id: str


class _Memory:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: OrderedDict[str, AllocationFacts] = OrderedDict()


# Per engine: the same allocation id in two databases (tests, a migration) is two things.
_BY_ENGINE: WeakKeyDictionary[Any, _Memory] = WeakKeyDictionary()
_GUARD = threading.Lock()


def _memory(session: Session) -> _Memory:
    engine = session.get_bind()
    memory = _BY_ENGINE.get(engine)
    if memory is None:
        with _GUARD:
            memory = _BY_ENGINE.setdefault(engine, _Memory())
    return memory


def remember(session: Session, rows: list[Any]) -> None:
    """Keep the fixed facts of allocations just claimed (rows with ``id``, ``feed_ids``,
    ``schedule_run_id`` and ``task_id``)."""
    memory = _memory(session)
    with memory.lock:
        for row in rows:
            memory.entries[row.id] = AllocationFacts(tuple(row.feed_ids or ()),
                                                     row.schedule_run_id, row.task_id)
            memory.entries.move_to_end(row.id)
        while len(memory.entries) > MAX_ENTRIES:
            memory.entries.popitem(last=False)


def recall(session: Session, allocation_id: str) -> AllocationFacts | None:
    memory = _memory(session)
    with memory.lock:
        return memory.entries.get(allocation_id)


def forget(session: Session, allocation_id: str) -> None:
    memory = _memory(session)
    with memory.lock:
        memory.entries.pop(allocation_id, None)
