"""The event loop the daemons run on.

uvloop (libuv) when it is installed, which it is on every platform the package declares it
for: it roughly halves the CPU the asyncio machinery costs per request. The stock asyncio loop
otherwise, so the daemons still run where uvloop cannot be installed (Windows, PyPy).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the fastest available loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
