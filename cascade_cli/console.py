"""Rich rendering helpers. Consoles are built by the CLI, never at import time."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
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


# --- listings (one JSON shape, short ids, relative times) -----------------------------------

def print_listing(items: list[Any], *, total: int | None = None, limit: int | None = None,
                  offset: int = 0) -> None:
    """Every listing command's ``--json``: ``{"list": [...], "total": N, "page": {"limit":
    L, "offset": O}}`` - the admin API's shape. ``total`` counts every match (not only this
    page); ``limit`` is null when the command does not page."""
    print_json({"list": items, "total": len(items) if total is None else total,
                "page": {"limit": limit, "offset": offset}})


def short_id(value: Any, wide: bool = False) -> str:
    """Ids in tables: the first 8 characters (UUIDv7 ids made together share their first
    characters for a few minutes only; every command takes such a prefix back), in full with
    ``--wide``."""
    text = "" if value is None else str(value)
    return text if wide or len(text) <= 8 else text[:8]


def relative_time(value: Any, now: datetime, *, wide: bool = False) -> str:
    """``12s ago``, ``5m ago``, ``3h ago``, ``2d ago`` or ``in 40s`` (a lease); the ISO time
    itself with ``wide``. Accepts an ISO string (as the store's dicts hold) or a datetime."""
    if value in (None, ""):
        return "-"
    when = value if isinstance(value, datetime) else _parse_iso(str(value))
    if when is None or wide:
        return str(value)
    seconds = (now - when).total_seconds()
    ahead = seconds < 0
    n = abs(seconds)
    if n < 60:
        text = f"{n:.0f}s"
    elif n < 3600:
        text = f"{n // 60:.0f}m"
    elif n < 86400 * 2:
        text = f"{n // 3600:.0f}h"
    else:
        text = f"{n // 86400:.0f}d"
    return f"in {text}" if ahead else f"{text} ago"


def _parse_iso(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def compact_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                  *, squeeze: Sequence[str] = ()) -> Table:
    """A table for 100-column terminals: no vertical rules, one space of padding, and the
    ``squeeze`` columns (free text such as errors) cut with an ellipsis instead of wrapping
    the row over several lines."""
    t = Table(title=title, box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False,
              padding=(0, 1), show_edge=False)
    for col in columns:
        if col in squeeze:
            t.add_column(col, overflow="ellipsis", no_wrap=True, ratio=1, min_width=8)
        else:
            t.add_column(col, overflow="fold", no_wrap=True)
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    return t
