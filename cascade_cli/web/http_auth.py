"""Who is calling: node credentials (plain ``AK-SK`` or the signed form) and admin tokens.

Used as FastAPI dependencies (``require_node``, ``require_admin``, ``require_any``). The two
roles never mix: a valid node credential on an admin route is 403 ``admin_required``, a valid
admin token on a node route is 403 ``node_required``. An unknown key and a wrong secret get the
same 401 ``invalid_credentials``. Failed attempts are throttled per client address and key
(``Throttle``).

Nothing here logs a header, a secret or a token.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from fastapi import Request
from sqlalchemy.orm import Session

from cascade_cli import auth
from cascade_cli.domain import tokens
from cascade_cli.errors import AuthError, ForbiddenError, ProtocolError, RateLimited
from cascade_cli.store import nodes
from cascade_cli.store.nodes import NodeRow

if TYPE_CHECKING:
    from cascade_cli.web.app import AppState

log = logging.getLogger("cascade.parent.auth")

# A fixed, valid public key that matches no secret: verifying against it when the key is
# unknown keeps the timing of "unknown key" and "wrong signature" alike.
_DUMMY_PUBLIC_KEY = auth.public_key_for("CS-cascade-dummy-never-issued-0000000000")


@dataclass(frozen=True)
class Principal:
    role: str  # "node" | "admin"
    node_id: str | None = None
    node_name: str | None = None
    jti: str | None = None


class Throttle:
    """Failed authentications in a sliding window, per (client address, key), in-process.

    Per key as well as per address: many children behind one NAT or proxy share an address,
    and one of them retrying a wrong secret must not lock out the others. So a request is
    refused before its credentials are checked only when its own (address, key) pair is over
    ``limit``. The address-wide ceiling (``address_limit`` failures over all keys: a client
    trying many keys) applies only to requests whose credentials *fail*: they get 429
    instead of 401. A request whose credentials verify is never refused for what other
    clients at its address did. The address is the peer's, or the one a trusted proxy
    forwarded (``parent.trusted_proxies``).

    In-process, not shared between parent processes: with N processes behind a balancer a
    client gets up to N times the limit. That is a deliberate trade (docs/operations.md): a
    shared counter would cost a database write per failed attempt and a read on every
    request, and the throttle only slows noise down; the secrets (256 bits, verified in
    constant time) are what keeps guessing out.
    """

    def __init__(self, limit: int, window: float, address_limit: int | None = None,
                 max_entries: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.address_limit = address_limit if address_limit is not None else 10 * limit
        self.max_entries = max_entries
        self._fails: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    def _prune(self, entry: tuple[str, str], now: float) -> deque[float] | None:
        q = self._fails.get(entry)
        if q is None:
            return None
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._fails[entry]
            return None
        return q

    def check(self, addr: str, key: str = "", now: float | None = None) -> None:
        """Before verification: refuse (429) a pair over its limit; never the address."""
        now = time.monotonic() if now is None else now
        q = self._prune((addr, key), now)
        if q is not None and len(q) >= self.limit:
            self._refuse(q[0] + self.window - now, "for this key from this address",
                         f"parent.auth.failed_attempts_limit = {self.limit}")

    def _refuse(self, retry: float, which: str, setting: str) -> None:
        retry = max(1.0, retry)
        raise RateLimited(f"auth-failure throttle: too many failed authentications {which} "
                          f"({setting} per {self.window:g} s); retry after {retry:.0f} s with "
                          "correct credentials", retry_after=retry)

    def fail(self, addr: str, key: str = "", now: float | None = None) -> None:
        """Count a failed authentication; raises ``RateLimited`` (answer 429, not 401) when
        the address is now past the address-wide ceiling."""
        now = time.monotonic() if now is None else now
        # Only the newest failures matter for a refusal, so each queue keeps just enough of
        # them: a flood of failures cannot grow the memory per entry.
        keep = {(addr, key): self.limit, (addr, "*"): self.address_limit + 1}
        for entry, maxlen in keep.items():
            q = self._prune(entry, now)
            if q is None:
                q = deque(maxlen=maxlen)
                self._fails[entry] = q
                while len(self._fails) > self.max_entries:
                    self._fails.popitem(last=False)
            else:
                self._fails.move_to_end(entry)
            q.append(now)
        q = self._fails.get((addr, "*"))
        if q is not None and len(q) > self.address_limit:
            self._refuse(q[0] + self.window - now, "from this address (all keys)",
                         f"parent.auth.failed_attempts_address_limit = {self.address_limit}")


def throttle_key(parsed: auth.PlainAuth | auth.SignedAuth | auth.BearerAuth | None) -> str:
    """What the throttle counts failures of besides the address: the node's key; one bucket
    for all admin tokens; one for a missing or malformed header. Bounded in length: the key
    comes from the client."""
    if isinstance(parsed, auth.PlainAuth | auth.SignedAuth):
        return "key:" + parsed.api_key[:64]
    if isinstance(parsed, auth.BearerAuth):
        return "bearer"
    return "malformed"


def path_with_query(request: Request) -> str:
    """The raw path plus ``?`` and the raw query, exactly as the client signed it."""
    scope = request.scope
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes | bytearray) else scope.get("path", "")
    path = path.split("?", 1)[0]
    query = scope.get("query_string") or b""
    return f"{path}?{query.decode('latin-1')}" if query else path


def _client_addr(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _invalid() -> AuthError:
    return AuthError("invalid credentials: unknown api_key or wrong api_secret",
                     code="invalid_credentials")


def check_node(s: Session, now: datetime, settings: Any, parsed: auth.PlainAuth |
               auth.SignedAuth, method: str, pwq: str, body: bytes) -> NodeRow:
    """Check a node credential in the caller's unit of work (a nonce is remembered in it);
    the node row, for the work that follows in the same transaction."""
    a = settings.parent.auth
    node = nodes.find_row_by_key(s, parsed.api_key)
    if isinstance(parsed, auth.PlainAuth):
        if not a.allow_plain_secret:
            raise AuthError("plain AK-SK authentication is disabled on this parent; "
                            "use the signed form", code="plain_auth_disabled")
        if node is None:
            auth.verify_secret(parsed.api_secret, None)
            raise _invalid()
        if not nodes.secret_matches(node, parsed.api_secret, now):
            raise _invalid()
    else:
        keys = nodes.public_keys(node, now) if node is not None else []
        good = False
        for key in keys or [_DUMMY_PUBLIC_KEY]:
            if auth.verify_signature(key, method, pwq, parsed.timestamp, parsed.nonce, body,
                                     parsed.signature):
                good = bool(keys)
                break
        if not good or node is None:
            raise _invalid()
        try:
            ts = int(parsed.timestamp)
        except ValueError:
            raise _invalid() from None
        skew = abs(now.timestamp() - ts)
        if skew > a.clock_skew:
            raise AuthError(f"request timestamp is {int(skew)} s away from the parent's clock "
                            f"(allowed {int(a.clock_skew)} s); synchronise the child's clock "
                            "(NTP)", code="clock_skew")
        if not nodes.remember_nonce(s, node.id, parsed.nonce, nonce_expiry(settings, now)):
            raise AuthError("request replayed: this nonce was already used", code="replayed")
    _check_enabled(node)
    return node


def nonce_expiry(settings: Any, now: datetime) -> datetime:
    a = settings.parent.auth
    return now + timedelta(seconds=max(a.nonce_ttl, 2 * a.clock_skew))


def _check_enabled(node: NodeRow) -> None:
    if not node.enabled:
        raise ForbiddenError(f"node '{node.name}' is disabled on the parent",
                             code="node_disabled")


def verify_node(s: Session, now: datetime, settings: Any, parsed: auth.PlainAuth |
                auth.SignedAuth, method: str, pwq: str, body: bytes) -> Principal:
    """Check a node credential in one unit of work (the nonce is remembered in it)."""
    node = check_node(s, now, settings, parsed, method, pwq, body)
    return Principal("node", node.id, node.name)


class NodeAuth:
    """A node route's credential, checked inside the route's own unit of work.

    A node request is then one transaction (credential, node row and the work together)
    instead of two. The first check verifies the credential (remembering a signed request's
    nonce); later checks in the same request (the rounds of a long poll) only re-read the node
    so that disabling or revoking it still ends the poll's claims at once.
    """

    def __init__(self, state: AppState, parsed: auth.PlainAuth | auth.SignedAuth, method: str,
                 pwq: str, body: bytes, addr: str) -> None:
        self.state = state
        self.key = throttle_key(parsed)
        self.parsed = parsed
        self.method = method
        self.pwq = pwq
        self.body = body
        self.addr = addr
        self.node_id: str | None = None
        self.node_name: str | None = None

    @property
    def signed(self) -> bool:
        return isinstance(self.parsed, auth.SignedAuth)

    def node(self, s: Session, now: datetime) -> NodeRow:
        """The caller's node, checked; raises the protocol's 401/403 otherwise."""
        if self.node_id is not None:
            node = nodes.get_row(s, self.node_id)
            if node is None or (node.secret_hash is None and node.revoked_at is not None):
                raise _invalid()
            _check_enabled(node)
            return node
        try:
            node = check_node(s, now, self.state.settings, self.parsed, self.method, self.pwq,
                              self.body)
        except (AuthError, ForbiddenError) as exc:
            self.refused(exc)
            raise
        self.node_id, self.node_name = node.id, node.name
        return node

    def refused(self, exc: AuthError | ForbiddenError) -> None:
        state = self.state
        state.metrics.auth_failures.labels(exc.code).inc()
        if isinstance(exc, AuthError):
            log.info("authentication refused from %s: %s", self.addr, exc.code)
            state.throttle.fail(self.addr, self.key)  # 429 past the address-wide ceiling


async def authenticate(request: Request) -> Principal:
    """Identify the caller, whatever its role; 401/429 on failure."""
    state: AppState = request.app.state.cascade
    header = request.headers.get("authorization")
    addr = _client_addr(request)
    if not header:
        state.metrics.auth_failures.labels("missing_credentials").inc()
        raise AuthError("missing Authorization header (AK-SK key:secret, the signed form, or "
                        "Bearer token)", code="missing_credentials")
    parsed = auth.parse_authorization(header)
    key = throttle_key(parsed)
    state.throttle.check(addr, key)
    try:
        if parsed is None:
            raise AuthError("malformed Authorization header", code="invalid_credentials")
        if isinstance(parsed, auth.BearerAuth):
            secret = state.admin_secret
            if secret is None:
                raise ProtocolError("admin tokens are not configured on this parent",
                                    code="admin_not_configured", status=503)
            claims = await state.db.run(
                lambda s, now: tokens.verify(s, now, secret, parsed.token))
            return Principal("admin", jti=claims["jti"])
        body = await request.body() if isinstance(parsed, auth.SignedAuth) else b""
        method, pwq = request.method, path_with_query(request)
        return await state.db.run(
            lambda s, now: verify_node(s, now, state.settings, parsed, method, pwq, body))
    except AuthError as exc:
        state.metrics.auth_failures.labels(exc.code).inc()
        log.info("authentication refused from %s: %s", addr, exc.code)
        state.throttle.fail(addr, key)  # 429 past the address-wide ceiling, else the 401
        raise
    except ForbiddenError as exc:
        state.metrics.auth_failures.labels(exc.code).inc()
        raise


async def require_node(request: Request) -> NodeAuth:
    """A node credential, checked later in the route's unit of work (``NodeAuth.node``);
    an admin token is verified here and refused with 403 ``node_required``."""
    state: AppState = request.app.state.cascade
    header = request.headers.get("authorization")
    parsed = auth.parse_authorization(header) if header else None
    if isinstance(parsed, auth.PlainAuth | auth.SignedAuth):
        addr = _client_addr(request)
        state.throttle.check(addr, throttle_key(parsed))
        body = await request.body() if isinstance(parsed, auth.SignedAuth) else b""
        return NodeAuth(state, parsed, request.method, path_with_query(request), body, addr)
    await authenticate(request)  # missing, malformed or a bearer token: 401/429, or ...
    raise ForbiddenError("this route is for child nodes (AK-SK or signed credentials), "
                         "not admin tokens", code="node_required")


async def require_admin(request: Request) -> Principal:
    p = await authenticate(request)
    if p.role != "admin":
        raise ForbiddenError("this route needs an admin token (Authorization: Bearer ...; "
                             "issue one with 'cascade token create' on the parent host)",
                             code="admin_required")
    return p


async def require_any(request: Request) -> Principal:
    return await authenticate(request)
