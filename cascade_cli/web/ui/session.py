"""Who is looking at the dashboard: a signed session cookie bound to an admin token, and CSRF.

* Login: the operator pastes an admin token once; it is checked like a ``Bearer`` header
  (signature, expiry, revocation, throttled per address). The cookie does NOT hold the token:
  it holds ``s1.<jti>.<expires>.<nonce>.<mac>``, a random 256-bit nonce and the token's id and
  the session's end, signed with an HMAC under the parent's admin-token secret. Why not the
  token: a copied token is a Bearer credential for the whole admin API until it expires; a
  copied cookie is nothing outside ``/ui`` (it is no JWT, so the API refuses it) and ends
  after ``parent.ui_session_ttl`` (never after the token).
* Why signed and not a random id in a table: several parent processes may serve one
  dashboard behind one proxy, and a session table would need a migration. The cost is that
  logout cannot end a copied cookie server-side (there is no revocation for sessions): it
  drops the cookie, and the short lifetime bounds the rest (docs/dashboard.md says so).
* Every request checks the token's record again, so revoking the token with
  ``cascade token revoke`` ends every session opened with it at once. An expired, revoked or
  unreadable cookie sends the browser to the login form and is cleared; it is not counted as
  a failed authentication (a browser left open overnight is no attack). A cookie whose
  signature is wrong is a forgery and is counted.
* Node credentials never log in: a pasted ``key:secret`` is refused, and a request carrying a
  node credential (``AK-SK`` or the signed form) gets 403 on every dashboard path.
* CSRF: actions need ``X-CSRF-Token`` (or the form field ``csrf``) equal to an HMAC of the
  token's ``jti`` under the parent's admin secret. It is rendered into the page, so only a page
  the dashboard served can send it; SameSite=Strict keeps the cookie off other sites' requests
  as a second line. A ``Bearer`` header (a script, no ambient credential) needs no CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from cascade_cli import auth
from cascade_cli.clock import ensure_utc
from cascade_cli.domain import tokens
from cascade_cli.errors import AuthError, ForbiddenError, ProtocolError

if TYPE_CHECKING:
    from cascade_cli.web.app import AppState

SESSION_COOKIE = "cascade_ui"
CSRF_HEADER = "x-csrf-token"
MAX_TOKEN_CHARS = 4096
COOKIE_VERSION = "s1"
# version . jti (the token's hex id) . expiry (unix seconds) . nonce (32 random bytes) . mac
COOKIE_RE = re.compile(r"s1\.([0-9a-f]{1,64})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})\.([0-9a-f]{64})")


class LoginRequired(AuthError):
    """No (valid) session: pages redirect to the login form, actions answer 401."""


@dataclass(frozen=True)
class UiSession:
    jti: str
    csrf: str
    via_header: bool  # authenticated by an Authorization header, not the cookie
    expires_at: datetime


def csrf_for(secret: bytes, jti: str) -> str:
    return hmac.new(secret, b"cascade-ui-csrf|" + jti.encode(), hashlib.sha256).hexdigest()


def _cookie_mac(secret: bytes, jti: str, expires: int, nonce: str) -> str:
    # Its own prefix: a session MAC can never pass for a CSRF token or the reverse.
    message = f"cascade-ui-session|{jti}|{expires}|{nonce}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def cookie_value(secret: bytes, jti: str, expires_at: datetime) -> str:
    """A new session's cookie value (see the module's docstring for its shape and why)."""
    expires = int(expires_at.timestamp())
    nonce = secrets.token_urlsafe(32)
    mac = _cookie_mac(secret, jti, expires, nonce)
    return f"{COOKIE_VERSION}.{jti}.{expires}.{nonce}.{mac}"


def session_end(now: datetime, ttl: float, token_expires: datetime) -> datetime:
    """When a session opened now ends: after ``ttl``, but never after its token."""
    return min(ensure_utc(now) + timedelta(seconds=ttl), token_expires)


def client_addr(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def refuse_node_credentials(request: Request) -> None:
    """403 for any request under the dashboard that carries a node credential."""
    header = request.headers.get("authorization")
    if header and isinstance(auth.parse_authorization(header),
                             auth.PlainAuth | auth.SignedAuth):
        raise ForbiddenError("the dashboard is for admins: node credentials cannot use it "
                             "(log in with an admin token from 'cascade token create')",
                             code="admin_required")


def looks_like_node_credential(text: str) -> bool:
    """A pasted ``api_key:api_secret`` pair, a node ``Authorization`` value or a bare node
    key or secret. Admin tokens are JWTs: three base64url parts, no colon."""
    value = text.strip()
    if isinstance(auth.parse_authorization(value), auth.PlainAuth | auth.SignedAuth):
        return True
    return ":" in value or value.startswith((auth.KEY_PREFIX, auth.SECRET_PREFIX))


async def verify_token(state: AppState, request: Request, token: str) -> UiSession:
    """Check an admin token (throttled per address like the API's); the session it opens,
    ending after ``parent.ui_session_ttl`` or with the token, whichever comes first."""
    secret = admin_secret(state)
    addr = client_addr(request)
    state.throttle.check(addr)
    if not token or len(token) > MAX_TOKEN_CHARS:
        state.throttle.fail(addr)
        raise LoginRequired("invalid admin token", code="invalid_token")
    try:
        claims = await state.db.run(lambda s, now: tokens.verify(s, now, secret, token))
    except AuthError:
        state.throttle.fail(addr)
        state.metrics.auth_failures.labels("ui_invalid_token").inc()
        raise
    jti = str(claims["jti"])
    token_expires = datetime.fromtimestamp(float(claims["exp"]), tz=UTC)
    expires = session_end(state.clock.now(), state.settings.parent.ui_session_ttl,
                          token_expires)
    return UiSession(jti=jti, csrf=csrf_for(secret, jti), via_header=False, expires_at=expires)


def admin_secret(state: AppState) -> bytes:
    """The parent's admin-token secret: it signs tokens, session cookies and CSRF tokens."""
    secret = state.admin_secret
    if secret is None:
        raise ProtocolError("admin tokens are not configured on this parent",
                            code="admin_not_configured", status=503)
    return secret


async def verify_cookie(state: AppState, request: Request, value: str) -> UiSession:
    """The session a cookie value stands for; ``LoginRequired`` when it has ended.

    Only a wrong signature counts against the address's throttle: an expired or revoked
    session, or a cookie of an older format, is an operator who must log in again."""
    secret = admin_secret(state)
    m = COOKIE_RE.fullmatch(value)
    if m is None:
        raise LoginRequired("log in again (the dashboard session is not readable)",
                            code="login_required")
    jti, expires_text, nonce, mac = m.groups()
    expires = int(expires_text)
    if not hmac.compare_digest(mac, _cookie_mac(secret, jti, expires, nonce)):
        addr = client_addr(request)
        state.throttle.check(addr)
        state.throttle.fail(addr)
        state.metrics.auth_failures.labels("ui_invalid_session").inc()
        raise LoginRequired("invalid dashboard session: log in again", code="invalid_session")
    if expires <= ensure_utc(state.clock.now()).timestamp():
        raise LoginRequired("the dashboard session has expired: log in again",
                            code="session_expired")
    try:
        await state.db.run(lambda s, now: tokens.check_recorded(s, now, jti))
    except AuthError as exc:
        raise LoginRequired(exc.message, code=exc.code) from exc
    return UiSession(jti=jti, csrf=csrf_for(secret, jti), via_header=False,
                     expires_at=datetime.fromtimestamp(expires, tz=UTC))


async def current(state: AppState, request: Request) -> UiSession:
    """The session of this request; ``LoginRequired`` when there is none."""
    refuse_node_credentials(request)
    header = request.headers.get("authorization")
    if header:
        parsed = auth.parse_authorization(header)
        if isinstance(parsed, auth.BearerAuth):
            session = await verify_token(state, request, parsed.token)
            return UiSession(session.jti, session.csrf, True, session.expires_at)
        raise AuthError("malformed Authorization header", code="invalid_credentials")
    value = request.cookies.get(SESSION_COOKIE)
    if not value:
        raise LoginRequired("log in with an admin token first", code="login_required")
    return await verify_cookie(state, request, value)


def refuse_cross_site(request: Request) -> None:
    """403 for a request a browser marks as sent by another site (``Sec-Fetch-Site``): a
    third layer for actions, and the one that guards the login form (no session yet)."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        raise ForbiddenError("cross-site request refused: use the dashboard's own pages",
                             code="csrf_failed")


def check_csrf(request: Request, session: UiSession, form_value: str | None = None) -> None:
    if session.via_header:
        return
    refuse_cross_site(request)
    sent = request.headers.get(CSRF_HEADER) or form_value or ""
    if not hmac.compare_digest(sent.encode()[:128], session.csrf.encode()):
        raise ForbiddenError("missing or wrong CSRF token: reload the page and try again",
                             code="csrf_failed")


def set_session_cookie(response: Response, request: Request, secret: bytes,
                       session: UiSession, now: datetime, path: str) -> None:
    max_age = max(1, int((session.expires_at - ensure_utc(now)).total_seconds()))
    value = cookie_value(secret, session.jti, session.expires_at)
    response.set_cookie(SESSION_COOKIE, value, max_age=max_age, path=path, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def clear_session_cookie(response: Response, request: Request, path: str) -> None:
    response.delete_cookie(SESSION_COOKIE, path=path, httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
