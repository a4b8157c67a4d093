"""Ids as tables show them: a generated id (32 hex digits) appears as its last 8 characters
(``console.short_id``), so every command that takes an id takes those characters back.

One rule for every kind: the exact id first (the caller tries names), then a unique end -
or, where ``prefix`` is allowed, start - of an id. Two or more matches are an error that
lists them, never a guess: a command that disables or deletes must act on the object the
operator meant.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cascade_cli.errors import InvalidInput

# How many candidates an ambiguity error lists (more only lengthen the line).
_SHOWN = 5


def match_short_id(s: Session, column: Any, ident: str, what: str, *, min_len: int = 8,
                   prefix: bool = False) -> str | None:
    """The one id of ``column`` ending (or, with ``prefix``, starting) with ``ident``; None
    when none does or ``ident`` cannot be a part of an id (too short, or a character that
    LIKE would read as a wildcard). Raises ``InvalidInput`` naming the candidates when
    several match."""
    if len(ident) < min_len or not ident.isascii() or not ident.isalnum():
        return None
    cond = column.like("%" + ident)
    if prefix:
        cond = or_(cond, column.like(ident + "%"))
    ids = [str(i) for i in s.scalars(select(column).where(cond).limit(_SHOWN + 1))]
    if len(ids) > 1:
        shown = ", ".join(ids[:_SHOWN]) + (", ..." if len(ids) > _SHOWN else "")
        raise InvalidInput(f"{ident!r} matches several {what}s ({shown}); give more of the "
                           "id (--wide shows full ids)", field=what)
    return ids[0] if ids else None
