"""Who is looking at the dashboard: an admin token kept in a cookie, and the CSRF check.

* Login: the operator pastes an admin token once; it is checked like a ``Bearer`` header
  (signature, expiry, revocation) and kept in an HttpOnly, SameSite=Strict cookie whose path
  is the dashboard's. Every request checks it again, so revoking the token with
  ``cascade token revoke`` ends the session at once. Logout only drops the cookie: the token
  itself stays valid for the CLI or scripts that also use it.
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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from cascade_cli import auth
from cascade_cli.clock import ensure_utc
from cascade_cli.errors import AuthError, ForbiddenError, ProtocolError
from cascade_cli.parent import tokens

if TYPE_CHECKING:
    from cascade_cli.parent.app import AppState

SESSION_COOKIE = "cascade_ui"
CSRF_HEADER = "x-csrf-token"
MAX_TOKEN_CHARS = 4096


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
    """Check an admin token (throttled per address like the API's); the session it opens."""
    secret = state.admin_secret
    if secret is None:
        raise ProtocolError("admin tokens are not configured on this parent",
                            code="admin_not_configured", status=503)
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
    expires = datetime.fromtimestamp(float(claims["exp"]), tz=UTC)
    return UiSession(jti=jti, csrf=csrf_for(secret, jti), via_header=False, expires_at=expires)


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
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise LoginRequired("log in with an admin token first", code="login_required")
    try:
        return await verify_token(state, request, token)
    except AuthError as exc:
        raise LoginRequired(exc.message, code=exc.code) from exc


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


def set_session_cookie(response: Response, request: Request, token: str, session: UiSession,
                       now: datetime, path: str) -> None:
    max_age = max(1, int((session.expires_at - ensure_utc(now)).total_seconds()))
    response.set_cookie(SESSION_COOKIE, token, max_age=max_age, path=path, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def clear_session_cookie(response: Response, request: Request, path: str) -> None:
    response.delete_cookie(SESSION_COOKIE, path=path, httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
