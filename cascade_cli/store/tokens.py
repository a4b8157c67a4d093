"""Admin token records (table ``admin_tokens``): issued, listed and revoked by ``jti``.
Signing and checking the tokens is ``domain.tokens``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cascade_cli.store.idmatch import match_short_id
from cascade_cli.store.models import AdminToken


def add(s: Session, now: datetime, jti: str, *, label: str, expires_at: datetime
        ) -> AdminToken:
    row = AdminToken(jti=jti, label=label, created_at=now, expires_at=expires_at)
    s.add(row)
    s.flush()
    return row


def get(s: Session, jti: str) -> AdminToken | None:
    return s.get(AdminToken, jti)


def find(s: Session, ident: str) -> AdminToken | None:
    """By full ``jti``, else by the 8 characters ``token list`` shows."""
    row = s.get(AdminToken, ident)
    if row is None:
        found = match_short_id(s, AdminToken.jti, ident, "admin token")
        row = s.get(AdminToken, found) if found is not None else None
    return row


def list_all(s: Session) -> list[AdminToken]:
    return list(s.scalars(select(AdminToken).order_by(AdminToken.created_at)))
