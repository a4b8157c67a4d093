"""What never changes about an allocation, remembered in the process that handed it out.

An allocation's feeds, run and task are fixed when dispatch creates it; only its state,
owner, lease and counters change afterwards. The parent remembers the fixed part of what it
claims, so that an owner's later writes can be validated before they reach the database and
sent as one statement instead of a read-back and a write (see
``allocations.upload_articles``; PostgreSQL's dialect is the one that remembers).

``FactsMemory`` is owned by a ``Store`` (one per database: the same allocation id in two
databases, in tests or a migration, is two things) and handed to its dialect. It is told
explicitly: ``remember`` on a claim, ``forget`` when the allocation leaves this process's
hands: finished (completed, failed, timed out), released, or requeued by the reaper after its
lease expired. A requeued allocation may next be claimed by another parent process, whose
node then writes through whichever process its requests reach.

Safe with several parent processes and across restarts: an entry is only ever used together
with the database's own checks (ownership, epoch and state are part of every statement), and
a missing entry means the ordinary path. Bounded: the oldest entries go first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple, Protocol

MAX_ENTRIES = 20_000  # far more than the work in flight of a large fleet (nodes x capacity)


class AllocationFacts(NamedTuple):
    feed_ids: tuple[str, ...]
    schedule_run_id: str
    task_id: str


class Claimed(Protocol):
    """What a claim returns and ``remember`` reads."""

    @property
    def id(self) -> str: ...
    @property
    def feed_ids(self) -> list[str] | None: ...
    @property
    def schedule_run_id(self) -> str: ...
    @property
    def task_id(self) -> str: ...


class FactsMemory:
    """The facts of allocations this process claimed, by allocation id (thread-safe)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, AllocationFacts] = OrderedDict()

    def remember(self, rows: Iterable[Claimed]) -> None:
        """Keep the fixed facts of allocations just claimed."""
        with self._lock:
            entries = self._entries
            for row in rows:
                entries[row.id] = AllocationFacts(tuple(row.feed_ids or ()),
                                                  row.schedule_run_id, row.task_id)
                entries.move_to_end(row.id)
            while len(entries) > self.max_entries:
                entries.popitem(last=False)

    def recall(self, allocation_id: str) -> AllocationFacts | None:
        with self._lock:
            return self._entries.get(allocation_id)

    def forget(self, *allocation_ids: str) -> None:
        """The allocations left this process's hands (finished, released, requeued)."""
        if not allocation_ids:
            return
        with self._lock:
            for allocation_id in allocation_ids:
                self._entries.pop(allocation_id, None)

    def __len__(self) -> int:
        return len(self._entries)
