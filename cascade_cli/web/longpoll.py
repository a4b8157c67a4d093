"""Long-poll wake-ups for ``claim-task?wait=N``.

An in-process dispatch calls ``notify()`` and every waiter re-checks the database at once. A
dispatch written by another parent process (or the CLI) is not announced here, so waiters also
re-check the database every ``recheck_interval`` seconds: that bounds the delay to about that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class Waiters:
    def __init__(self, recheck_interval: float = 0.5) -> None:
        self.recheck_interval = recheck_interval
        self._event: asyncio.Event | None = None
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def _current(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
            self._loop = asyncio.get_running_loop()
        return self._event

    def notify(self) -> None:
        """Wake every waiter (call from the event loop thread)."""
        event = self._event
        self._event = None  # later waiters get a fresh, unset event
        if event is not None:
            event.set()

    def notify_threadsafe(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.notify)

    def shutdown(self) -> None:
        """Make current and future waits return at once (the server is stopping)."""
        self._stopping = True
        self.notify()

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def _wait_on(self, event: asyncio.Event, timeout: float) -> bool:
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a notify; True when woken, False on timeout."""
        if self._stopping or timeout <= 0:
            return False
        return await self._wait_on(self._current(), timeout)

    async def poll(self, attempt: Callable[[], Awaitable[T | None]], wait: float,
                   is_gone: Callable[[], Awaitable[bool]] | None = None) -> T | None:
        """Call ``attempt`` until it returns something or ``wait`` seconds have passed.

        Deadlines use the event loop's clock: this is a real wait, not domain time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, wait)
        while True:
            # Take the event before checking, so a notify during the check is not lost.
            event = self._current() if (wait > 0 and not self._stopping) else None
            result = await attempt()
            if result is not None:
                return result
            remaining = deadline - loop.time()
            if event is None or remaining <= 0 or self._stopping:
                return None
            await self._wait_on(event, min(self.recheck_interval, remaining))
            if is_gone is not None and await is_gone():
                return None
