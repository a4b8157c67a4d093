"""Admin bearer tokens: HS256 JWTs signed with a parent secret, recorded by ``jti`` so they
can be listed and revoked.

The signing secret lives in ``parent.auth.admin_token_secret_file`` (default
``<data_dir>/admin-token.key``, mode 0600). ``cascade init`` creates it; ``ensure_secret`` also
creates it on first need so ``token create`` and ``serve-parent`` always agree on one file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt

from cascade_cli import durations
from cascade_cli.clock import isoformat_z
from cascade_cli.errors import AuthError, ConfigError, NotFound
from cascade_cli.store import tokens as token_repo
from cascade_cli.store.models import AdminToken

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

ALGORITHM = "HS256"
ISSUER = "cascade-parent"
ROLE = "admin"


def parse_duration(text: str) -> float:
    """A token lifetime: ``3600``, ``30m``, ``24h``, ``7d``, ``1d12h`` -> seconds (see
    ``durations``: one parser for every duration the CLI reads)."""
    return durations.parse_seconds(text, field="ttl")


def ensure_secret(path: Path) -> bytes:
    """Read the signing secret, creating it (0600, exclusive) when it does not exist yet."""
    try:
        return read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48).encode("ascii")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_secret(path)  # another process won the race; use its secret
    with os.fdopen(fd, "wb") as fh:
        fh.write(value + b"\n")
    return value


def read_secret(path: Path) -> bytes:
    try:
        value = path.read_bytes().strip()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(f"admin token secret not readable: {path} ({exc.strerror})",
                          key="parent.auth.admin_token_secret_file",
                          hint="check the file's permissions") from exc
    if len(value) < 32:
        raise ConfigError(f"admin token secret in {path} is too short",
                          key="parent.auth.admin_token_secret_file",
                          hint="delete the file and run 'cascade init' to create a new one "
                               "(every issued token becomes invalid)")
    return value


def issue(s: Session, now: datetime, secret: bytes, *, ttl: float,
          label: str = "") -> tuple[str, AdminToken]:
    jti = secrets.token_hex(16)
    expires = now + timedelta(seconds=ttl)
    claims = {"jti": jti, "iss": ISSUER, "sub": "admin", "role": ROLE,
              "iat": int(now.timestamp()), "exp": int(expires.timestamp())}
    if label:
        claims["label"] = label[:255]
    token = jwt.encode(claims, secret, algorithm=ALGORITHM)
    return token, token_repo.add(s, now, jti, label=label[:255], expires_at=expires)


def decode(secret: bytes, token: str, now: datetime) -> dict[str, Any]:
    """Signature, expiry and role; raises ``AuthError`` (no database access)."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "jti", "iat"], "verify_exp": False})
    except jwt.PyJWTError as exc:
        raise AuthError("invalid admin token", code="invalid_token") from exc
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp <= now.timestamp():
        raise AuthError("admin token expired", code="token_expired",
                        hint="issue a new one with 'cascade token create'")
    if claims.get("role") != ROLE or not isinstance(claims.get("jti"), str):
        raise AuthError("invalid admin token", code="invalid_token")
    return claims


def verify(s: Session, now: datetime, secret: bytes, token: str) -> dict[str, Any]:
    """``decode`` plus the revocation check against ``admin_tokens``."""
    claims = decode(secret, token, now)
    check_recorded(s, now, claims["jti"])
    return claims


def check_recorded(s: Session, now: datetime, jti: str) -> AdminToken:
    """The stored record of token ``jti``: known, not revoked, not expired; ``AuthError``
    otherwise. What a dashboard session checks on every request (it holds no token)."""
    row = token_repo.get(s, jti)
    if row is None:
        raise AuthError("admin token unknown to this parent", code="invalid_token")
    if row.revoked_at is not None:
        raise AuthError("admin token revoked", code="token_revoked")
    # The stored expiry is the authority: the claim is only what the token says of itself.
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthError("admin token expired", code="token_expired",
                        hint="issue a new one with 'cascade token create'")
    return row


def revoke(s: Session, now: datetime, jti: str) -> AdminToken:
    row = token_repo.find(s, jti)  # or the 8 characters 'token list' shows
    if row is None:
        raise NotFound("admin token", jti, hint="'cascade token list' shows the tokens")
    if row.revoked_at is None:
        row.revoked_at = now
    return row


def list_tokens(s: Session) -> list[AdminToken]:
    return token_repo.list_all(s)


def token_status(row: AdminToken, now: datetime) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return "active"


def token_dict(row: AdminToken, now: datetime) -> dict[str, Any]:
    return {"jti": row.jti, "label": row.label, "status": token_status(row, now),
            "created_at": isoformat_z(row.created_at), "expires_at": isoformat_z(row.expires_at),
            "revoked_at": isoformat_z(row.revoked_at)}


def load_for_app(path: Path) -> bytes | None:
    """The secret for a running app; ``None`` (admin routes refused) if it cannot be had."""
    with contextlib.suppress(OSError):
        return ensure_secret(path)
    return None
