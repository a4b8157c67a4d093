"""How ``--help`` reads: flags without a type, paragraphs wrapped by the terminal only.

Typer's rich help keeps every newline of a docstring inside a paragraph (so text wraps in the
middle of a sentence wherever the source line ended) and shows a flag such as ``--json`` as
``--json <bool>`` as if it took a value. Its plain help does neither; this module makes the rich
help agree with it, once, for every command (``main.CascadeGroup`` applies it to the tree).
"""

from __future__ import annotations

import inspect
from typing import Any

from typer.core import TyperOption

VERBATIM = "\b"  # click's marker: keep this paragraph's line breaks as written


def reflow(text: str | None) -> str | None:
    """Join the lines of each paragraph into one (the terminal wraps it). A paragraph that
    starts with click's ``\\b`` line keeps its line breaks (a hand-laid table); the marker
    itself is dropped because rich help would print it as an empty line."""
    if not text:
        return text
    head, sep, tail = text.partition("\f")  # after \f: not help text, leave it alone
    paragraphs = []
    for para in _paragraphs(head):
        lines = [line.rstrip() for line in para.splitlines()]
        if lines and lines[0].strip() == VERBATIM:
            paragraphs.append("\n".join(lines[1:]))
        else:
            paragraphs.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(p for p in paragraphs if p) + sep + tail


def _paragraphs(text: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    for line in inspect.cleandoc(text).splitlines():
        if line.strip():
            current.append(line)
        elif current:
            out.append("\n".join(current))
            current = []
    if current:
        out.append("\n".join(current))
    return out


def tidy_command(cmd: Any) -> None:
    """Reflow a command's (or group's) help texts and its options' help."""
    for attr in ("help", "short_help", "epilog"):
        value = getattr(cmd, attr, None)
        if isinstance(value, str):
            setattr(cmd, attr, reflow(value))
    for param in getattr(cmd, "params", ()):
        if isinstance(getattr(param, "help", None), str):
            param.help = reflow(param.help)


def _flag_type(self: TyperOption, ctx: Any) -> str | None:
    # A flag takes no value: show no type, as typer's plain (non-rich) help already does.
    if getattr(self, "is_flag", False) or getattr(self, "count", False):
        return None
    return _typer_display_type_rich(self, ctx)


_typer_display_type_rich = TyperOption.display_type_rich


def show_flags_without_type() -> None:
    """Make rich help print ``--json``, not ``--json <bool>`` (idempotent)."""
    TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]
