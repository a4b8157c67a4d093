"""Rich rendering helpers. Consoles are built by the CLI, never at import time."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def make_console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        # Piped or captured output: Rich would assume 80 columns and fold API keys and ids
        # across lines, which breaks copy-paste and grep.
        console.width = 200
    return console


def print_json(data: Any) -> None:
    """JSON alone on standard output, for scripts."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    t = Table(title=title, show_lines=False, header_style="bold")
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    return t


STATUS_STYLE = {
    "online": "green", "ok": "green", "completed": "green", "delivered": "green",
    "offline": "yellow", "warning": "yellow", "pending": "yellow", "claimed": "cyan",
    "executing": "cyan", "disabled": "red", "failed": "red", "timeout": "red", "dead": "red",
    "revoked": "red", "never seen": "dim",
}


def styled(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/{style}]" if style else status
