"""Rich rendering helpers. Consoles are built by the CLI, never at import time."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text


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
    """A generated id (32 hex digits) in a table: its LAST 8 characters, in full with
    ``--wide``. Not the first ones: a UUIDv7 starts with its creation time, and every
    allocation of a dispatch shares its first 11 digits; the end is random. Ids a user
    chose (feeds, tasks made with --id) are shown as they are. Commands that take an id
    (``runs show``, ``allocations --run``) accept these 8 characters back."""
    text = "" if value is None else str(value)
    if wide or not _GENERATED_ID.fullmatch(text):
        return text
    return text[-8:]


_GENERATED_ID = re.compile(r"[0-9a-f]{32}")


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


def wide_console(console: Console, wide: bool) -> Console:
    """With ``--wide`` a table shows full ids and times even past the terminal's width (the
    terminal wraps the lines; a pipe gets them whole)."""
    if wide:
        console.width = max(console.width, 240)
    return console


def compact_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                  *, squeeze: Sequence[str] = (), width: int | None = None) -> Table:
    """A table for 100-column terminals: no vertical rules, two spaces between columns, one
    line per row. The ``squeeze`` columns (free text such as errors) get what the others
    leave of ``width`` (at least 8 characters) and end with an ellipsis when cut; the full
    text is in ``--json`` and the ``show`` commands. Without ``width`` they get 30."""
    t = Table(title=title, box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False,
              padding=(0, 1, 0, 0), show_edge=False)
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    widths = {col: max([_cell_width(col)] + [_cell_width(row[i]) for row in cells])
              for i, col in enumerate(columns)}
    rooms = {col: 30 for col in squeeze}
    if width is not None and squeeze:
        fixed = sum(w for col, w in widths.items() if col not in squeeze)
        rooms = _share(width - fixed - 2 * (len(columns) - 1),
                       {col: widths[col] for col in squeeze if col in widths})
    for col in columns:
        if col in squeeze:
            t.add_column(col, overflow="ellipsis", no_wrap=True, max_width=rooms.get(col, 30))
        else:
            t.add_column(col, no_wrap=True)
    for row in cells:
        t.add_row(*row)
    return t


def _cell_width(markup: str) -> int:
    """Terminal columns of a cell's widest line (a cell may hold several lines)."""
    return max((line.cell_len for line in Text.from_markup(markup).split("\n")), default=0)


def _share(room: int, wanted: dict[str, int]) -> dict[str, int]:
    """Split ``room`` among the squeezed columns: one that needs less than an equal share
    gets what it needs and leaves the rest to the others (a short name next to a long URL
    does not halve the URL). Each gets at least 8 characters."""
    rooms: dict[str, int] = {}
    left = dict(wanted)
    while left:
        share = max(8, room // len(left))
        small = {col: w for col, w in left.items() if w <= share}
        if not small:
            rooms.update({col: share for col in left})
            break
        for col, w in small.items():
            rooms[col] = w
            room -= w
            del left[col]
    return rooms
