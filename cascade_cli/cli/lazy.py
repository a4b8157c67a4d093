"""The CLI's lazy loads: parent and child internals imported when a command runs, not when
``cascade`` starts.

``cascade --help`` (and every command's parsing) needs typer, rich and the ``cli`` modules
only; loading the store (SQLAlchemy), the domain, the web layer (FastAPI, uvicorn), the child
(httpx), the doctor, or even the configuration (pydantic) would triple its start-up time.
So a ``cli`` module names such a module once, at its top, in this form::

    if TYPE_CHECKING:
        from cascade_cli.store import nodes as node_store
    else:
        node_store = lazy("cascade_cli.store.nodes")

Type checkers and readers see an ordinary import (the import graph keeps the edge); at run
time the name is a stand-in that imports the module on first attribute access. This is the
only way the CLI defers an import of our own modules: no function-level imports
(``tests/foundation/test_cli_startup.py`` checks both, and that ``import cascade_cli.cli.main``
loads none of the heavy packages).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

# Every module a cli module loads lazily, filled in as the cli modules are imported (the
# start-up test compares it with the TYPE_CHECKING imports, so the two cannot drift apart).
LAZY_MODULES: set[str] = set()


class LazyModule:
    """Stands in for a module until an attribute of it is read."""

    __slots__ = ("_lazy_name", "_lazy_module")

    def __init__(self, name: str) -> None:
        self._lazy_name = name
        self._lazy_module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._lazy_module
        if module is None:
            module = self._lazy_module = importlib.import_module(self._lazy_name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        state = "loaded" if self._lazy_module is not None else "not loaded yet"
        return f"<lazy module {self._lazy_name!r} ({state})>"


def lazy(name: str) -> Any:
    """A stand-in for module ``name`` (absolute), imported on first use."""
    LAZY_MODULES.add(name)
    return LazyModule(name)
