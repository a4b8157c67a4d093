"""The client layer: the only code that speaks HTTP to the parent (PROTOCOL.md, version 1).

``ParentClient`` (blocking, for ``doctor`` and scripts) and ``AsyncParentClient`` (for the
asyncio child daemon) share everything but the transport: request building and signing, retry
policy and the translation of every failure into the ``ClientError`` tree, in the terms of the
troubleshooting guide (unreachable / wrong path / bad credentials / disabled / lost lease).

Retries (tenacity, exponential backoff with jitter) are for transient failures only:
connection refused, timeouts, dropped connections, 502/503/504 and 429 (honouring
``Retry-After``). A 4xx other than 429, a DNS failure or a configuration problem is never retried.
Every attempt is signed afresh (new timestamp and nonce), so a retry is never a replay.

Each route method returns the envelope's ``data`` as the protocol's answer model (``protocol``:
``TaskPackage``, ``HeartbeatAnswer``...), parsed here so the child reads attributes; the legacy
sync routes (``feeds``, ``message_tasks``) return the plain JSON. The async client's methods
return awaitables.
"""

from __future__ import annotations

import abc
import errno
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)

from cascade_cli import __version__, auth
from cascade_cli.clock import Clock, SystemClock, isoformat_z
from cascade_cli.errors import (
    BadCredentials,
    ClientError,
    LeaseLost,
    NodeDisabled,
    ParentRejected,
    ParentServerError,
    ParentUnreachable,
    WrongEndpoint,
)
from cascade_cli.httpdates import retry_after_seconds
from cascade_cli.protocol import (
    CANONICAL_PREFIX,
    AllocationAnswer,
    HeartbeatAnswer,
    HeartbeatCheck,
    TaskPackage,
    UploadAnswer,
    WireAnswer,
)

log = logging.getLogger("cascade.client")

A = TypeVar("A", bound=WireAnswer)

TRANSIENT_STATUSES = frozenset({502, 503, 504})
MAX_RETRY_AFTER = 60.0  # never sleep longer than this on one Retry-After


@dataclass(frozen=True)
class Call:
    """One protocol request, independent of the transport."""

    method: str
    route: str  # e.g. "/claim-task", relative to the prefix
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None  # JSON-serialisable, or None for no body
    raw: bytes | None = None  # an already encoded JSON body (takes precedence over body)
    extra_timeout: float = 0.0  # long polls wait on the server side
    retry: bool = True


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ParentUnreachable):
        return exc.reason != "dns"  # a typo in the host name does not fix itself
    if isinstance(exc, ParentServerError):
        return exc.status in TRANSIENT_STATUSES
    if isinstance(exc, ParentRejected):
        return exc.status == 429
    return False


def retry_after_of(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    return float(value) if isinstance(value, int | float) else None


def parse_retry_after(value: str | None, clock: Clock) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    return retry_after_seconds(value, clock.now())


def _connect_reason(exc: BaseException) -> str:
    """refused / dns / network, from the exception chain of an httpx.ConnectError."""
    seen: BaseException | None = exc
    text = ""
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return "dns"
        if isinstance(seen, ConnectionRefusedError) or getattr(seen, "errno", None) == \
                errno.ECONNREFUSED:
            return "refused"
        text += " " + str(seen)
        seen = seen.__cause__ or seen.__context__
    lowered = text.lower()
    if "refused" in lowered:
        return "refused"
    if ("name or service not known" in lowered or "nodename nor servname" in lowered
            or "temporary failure in name resolution" in lowered or "getaddrinfo" in lowered
            or "no address associated" in lowered):
        return "dns"
    return "network"


class _Core(abc.ABC):
    """Request building, signing and answer interpretation shared by both clients."""

    def __init__(self, base_url: str, api_key: str, api_secret: str, *,
                 auth_mode: str = "signed", timeout: float = 30.0, clock: Clock | None = None,
                 retries: int = 4, backoff_base: float = 0.5, backoff_max: float = 15.0,
                 prefix: str = CANONICAL_PREFIX, retry_log_level: int = logging.WARNING,
                 user_agent: str | None = None) -> None:
        if auth_mode not in ("signed", "plain"):
            raise ValueError("auth_mode must be 'signed' or 'plain'")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._secret = api_secret
        self._signing_key = auth.signing_key(api_secret) if auth_mode == "signed" else None
        self.auth_mode = auth_mode
        self.timeout = timeout
        self.clock: Clock = clock or SystemClock()
        self.retries = max(0, retries)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.prefix = prefix
        self.retry_log_level = retry_log_level
        self.user_agent = user_agent or f"cascade-child/{__version__}"

    def __repr__(self) -> str:  # never the secret
        return f"{type(self).__name__}({self.base_url!r}, key={self.api_key!r}, " \
               f"auth_mode={self.auth_mode!r})"

    # --- request building ------------------------------------------------------------------

    def url_for(self, route: str) -> str:
        return f"{self.base_url}{self.prefix}{route}"

    def _encode(self, call: Call) -> bytes:
        if call.raw is not None:
            return call.raw
        if call.body is None:
            return b""
        return json.dumps(call.body, ensure_ascii=False, separators=(",", ":"),
                          default=str).encode("utf-8")

    def _auth_header(self, request: httpx.Request) -> str:
        if self.auth_mode == "plain":
            return f"{auth.PLAIN_SCHEME} {self.api_key}:{self._secret}"
        # raw_path is exactly what goes on the request line: path plus '?query' if any.
        path_with_query = request.url.raw_path.decode("ascii")
        return auth.sign_request(self.api_key, self._signing_key or self._secret,
                                 request.method, path_with_query,
                                 request.content, int(self.clock.now().timestamp()))

    def _build(self, client: httpx.Client | httpx.AsyncClient, call: Call) -> httpx.Request:
        content = self._encode(call)
        headers = {"Accept": "application/json", "User-Agent": self.user_agent}
        if call.body is not None or call.raw is not None:
            headers["Content-Type"] = "application/json"
        timeout = httpx.Timeout(self.timeout + call.extra_timeout, connect=min(self.timeout, 10))
        request = client.build_request(call.method, self.url_for(call.route),
                                       params=call.params or None, content=content,
                                       headers=headers, timeout=timeout)
        request.headers["Authorization"] = self._auth_header(request)
        return request

    # --- failure translation ---------------------------------------------------------------

    def _transport_error(self, exc: httpx.TransportError, call: Call) -> ClientError:
        where = f"{self.base_url}"
        if isinstance(exc, httpx.TimeoutException):
            return ParentUnreachable(
                f"parent at {where} did not answer {call.method} {call.route} in time "
                f"({type(exc).__name__})", reason="timeout",
                hint="check that the parent is running and reachable (network, firewall), "
                     "or raise the timeout")
        if isinstance(exc, httpx.ConnectError):
            reason = _connect_reason(exc)
            if reason == "dns":
                return ParentUnreachable(
                    f"cannot resolve the parent's host name in {where}", reason="dns",
                    hint="check cascade.parent_api_url (typo in the host name?) and DNS")
            if reason == "refused":
                return ParentUnreachable(
                    f"connection refused by {where} (请求父节点失败: Connection refused)",
                    reason="refused",
                    hint="the parent is not running on that host/port: start it with "
                         "'cascade serve-parent', or fix cascade.parent_api_url")
            return ParentUnreachable(f"cannot connect to {where}: {exc}", reason="network",
                                     hint="check the network between this host and the parent")
        return ParentUnreachable(f"connection to {where} failed during {call.method} "
                                 f"{call.route}: {type(exc).__name__}: {exc}", reason="network",
                                 hint="check the network between this host and the parent")

    def _interpret(self, response: httpx.Response, call: Call) -> Any:
        status = response.status_code
        route = f"{call.method} {self.prefix}{call.route}"
        payload: Any = None
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            payload = None
        envelope = isinstance(payload, dict) and "code" in payload
        code: Any = payload.get("code") if envelope else None
        message = str(payload.get("message") or "") if envelope else ""
        err_code = payload.get("error") if envelope else None
        # An error code inside an HTTP 200 is still an error (the original client missed this).
        if status < 400 and envelope and code not in (0, "0", None):
            try:
                status = int(code)
            except (TypeError, ValueError):
                status = 500
            if status < 400:
                status = 500
        if status == 404:
            from urllib.parse import urlsplit

            extra_path = urlsplit(self.base_url).path
            hint: str | None
            if extra_path:
                hint = (f"remove '{extra_path}' from cascade.parent_api_url: it must be the "
                        f"parent's base URL (e.g. http://parent-server:8001) without a path; "
                        f"the client adds {self.prefix}{call.route} itself")
            else:
                hint = (f"is cascade.parent_api_url the Cascade parent (e.g. "
                        f"http://parent-server:8001, without a path)? it should serve "
                        f"{self.prefix}{call.route}")
            raise WrongEndpoint(
                f"404 Not Found: the parent does not serve {call.method} "
                f"{self.url_for(call.route)} (请求父节点失败: 404 - Not Found)"
                + (f": {message}" if message else ""), hint=hint)
        if status == 401:
            c = str(err_code or "invalid_credentials")
            hint = {"clock_skew": "this host's clock differs from the parent's by more than "
                                  "the allowed skew: sync it (NTP)",
                    "replayed": "a request was replayed; retry, and check for a proxy that "
                                "repeats requests"}.get(
                c, "check cascade.api_key and cascade.api_secret (copy them again from "
                   "'cascade init --child NAME', or rotate with 'cascade nodes rotate NAME')")
            raise BadCredentials(f"401 from the parent ({c})" + (f": {message}" if message
                                                                 else ""), code=c, hint=hint)
        if status == 403:
            c = str(err_code or "forbidden")
            named = re.search(r"node '([^']+)'", message)  # the parent names the node
            hint = (f"enable the node on the parent: 'cascade nodes enable "
                    f"{named.group(1) if named else 'NAME'}'" if c == "node_disabled" else None)
            raise NodeDisabled(f"403 from the parent ({c})" + (f": {message}" if message
                                                               else ""), code=c, hint=hint)
        if status == 409:
            c = str(err_code or "lease_superseded")
            raise LeaseLost(f"409 from the parent ({c})" + (f": {message}" if message else ""),
                            code=c)
        if status == 429 and "authentication" in message:
            exc = ParentRejected(
                f"429 from the parent for {route}: its auth throttle blocks this address "
                f"after too many failed logins ({message})", status=status,
                code=str(err_code) if err_code else None,
                hint="fix cascade.api_key/api_secret (a wrong secret retried in a loop trips "
                     "the throttle), then wait for Retry-After; the parent's "
                     "parent.auth.failed_attempts_limit sets it")
            exc.retry_after = parse_retry_after(  # type: ignore[attr-defined]
                response.headers.get("Retry-After"), self.clock)
            raise exc
        if 400 <= status < 500:
            exc = ParentRejected(f"{status} from the parent for {route}"
                                 + (f" ({err_code})" if err_code else "")
                                 + (f": {message}" if message else ""),
                                 status=status, code=str(err_code) if err_code else None)
            if status == 429:
                exc.retry_after = parse_retry_after(  # type: ignore[attr-defined]
                    response.headers.get("Retry-After"), self.clock)
            raise exc
        if status >= 500 and not envelope:
            # A Cascade parent always answers with its envelope, even on a crash; an HTML or
            # empty 5xx is another server (a wrong port, a proxy without its upstream).
            snippet = response.text[:80].replace("\n", " ") if response.content else "<empty>"
            text = (f"HTTP {status} from {self.base_url} for {route} without Cascade's JSON "
                    f"envelope ({snippet!r}): not a Cascade parent's answer")
            if status == 501:  # "Not Implemented": that server does not speak this method
                raise WrongEndpoint(
                    text + " - another web server listens on that port",
                    hint=f"check the port in cascade.parent_api_url ({self.base_url}): the "
                         "parent listens on parent.port (default 8001); 'cascade doctor' "
                         "tests the address step by step")
            raise ParentServerError(
                text, status=status,
                hint=f"check the host and port in cascade.parent_api_url ({self.base_url}); "
                     "behind a proxy, check that the proxy reaches the parent")
        if status >= 500:
            raise ParentServerError(f"{status} from the parent for {route}"
                                    + (f": {message}" if message else ""), status=status,
                                    hint="see the parent's log")
        if not envelope:
            snippet = response.text[:120].replace("\n", " ") if response.content else "<empty>"
            raise ParentServerError(
                f"the answer to {route} is not the Cascade envelope (HTTP {status}): "
                f"{snippet!r}", status=status,
                hint="is cascade.parent_api_url pointing at a Cascade parent and not at "
                     "another web server or a proxy login page?")
        return payload.get("data")

    # --- retry policy ----------------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = retry_after_of(exc) if exc else None
        if after is not None:
            return min(after, MAX_RETRY_AFTER)
        import random

        exp = self.backoff_base * (2 ** (state.attempt_number - 1))
        return min(self.backoff_max, exp) * (0.5 + random.random() / 2)  # noqa: S311

    def _before_sleep(self, call: Call) -> Callable[[RetryCallState], None]:
        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            sleep = state.next_action.sleep if state.next_action else 0
            log.log(self.retry_log_level, "%s %s failed (%s); retry %d/%d in %.1fs",
                    call.method, call.route, exc, state.attempt_number, self.retries, sleep)
        return log_retry

    def _retry_kwargs(self, call: Call) -> dict[str, Any]:
        return {
            "stop": stop_after_attempt((self.retries if call.retry else 0) + 1),
            "wait": self._wait,
            "retry": retry_if_exception(is_transient),
            "before_sleep": self._before_sleep(call),
            "reraise": True,
        }

    # --- routes (return data, or an awaitable of it in the async client) -------------------

    @abc.abstractmethod
    def _call(self, call: Call) -> Any:
        """Send ``call``: the blocking client returns its data, the async one an awaitable."""

    def _stamp(self, body: dict[str, Any], epoch: int | None) -> dict[str, Any]:
        if epoch is not None:
            body["epoch"] = epoch
        body["timestamp"] = isoformat_z(self.clock.now())
        return body

    def heartbeat_get(self) -> Any:
        """Read-only connection check (the guide's curl): a ``HeartbeatCheck`` (or None)."""
        return self._map(self._call(Call("GET", "/heartbeat")),
                         _answer(HeartbeatCheck, "GET /heartbeat"))

    def heartbeat(self, *, running: Sequence[str] = (), capacity: int | None = None,
                  hostname: str | None = None, version: str | None = None,
                  callback_url: str | None = None) -> Any:
        body: dict[str, Any] = {"running": list(running), "version": version or __version__}
        if capacity is not None:
            body["capacity"] = capacity
        if hostname:
            body["hostname"] = hostname
        if callback_url:
            body["callback_url"] = callback_url
        return self._map(self._call(Call("POST", "/heartbeat", body=body)),
                         _answer(HeartbeatAnswer, "POST /heartbeat"))

    def claim(self, wait: float = 0, max: int = 1) -> Any:  # noqa: A002 - protocol name
        """``TaskPackage`` s (a list, possibly empty). Long-polls up to ``wait`` seconds."""
        wait_s = int(max_wait(wait))
        return self._map(self._call(Call("POST", "/claim-task",
                                         params={"wait": wait_s, "max": int(max)},
                                         extra_timeout=wait_s)), _as_list)

    def pending_tasks(self) -> Any:
        """Legacy claim of one ``TaskPackage``; ``None`` when there is no work."""
        return self._map(self._call(Call("GET", "/pending-tasks")),
                         _answer(TaskPackage, "GET /pending-tasks"))

    def set_status(self, allocation_id: str, status: str, *, error_message: str | None = None,
                   epoch: int | None = None) -> Any:
        body: dict[str, Any] = {"allocation_id": allocation_id, "status": status}
        if error_message:
            body["error_message"] = error_message[:10_000]
        return self._map(self._call(Call("PUT", "/task-status", body=self._stamp(body, epoch))),
                         _answer(AllocationAnswer, "PUT /task-status"))

    def upload_articles(self, allocation_id: str, articles: Sequence[dict[str, Any]], *,
                        feed_id: str | None = None, epoch: int | None = None) -> Any:
        body: dict[str, Any] = {"allocation_id": allocation_id, "articles": list(articles)}
        if feed_id:
            body["feed_id"] = feed_id
        return self._map(self._call(Call("POST", "/upload-articles",
                                         body=self._stamp(body, epoch))),
                         _answer(UploadAnswer, "POST /upload-articles"))

    def upload_articles_json(self, allocation_id: str, articles_json: Sequence[bytes | str], *,
                             feed_id: str | None = None, epoch: int | None = None) -> Any:
        """Like ``upload_articles`` with each article (or comma-joined run of articles) already
        JSON: UTF-8 bytes from the spool, or text. Joined into the body in one pass, as bytes
        (the body of 500 articles is ~0.4 MB: no decode or re-encode of it)."""
        head: dict[str, Any] = {"allocation_id": allocation_id}
        if feed_id:
            head["feed_id"] = feed_id
        head = self._stamp(head, epoch)
        prefix = json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1].encode()
        parts = [a if isinstance(a, bytes) else a.encode() for a in articles_json]
        raw = b"".join((prefix, b',"articles":[', b",".join(parts), b"]}"))
        return self._map(self._call(Call("POST", "/upload-articles", raw=raw)),
                         _answer(UploadAnswer, "POST /upload-articles"))

    def report_completion(self, allocation_id: str, task_id: str | None,
                          results: Sequence[dict[str, Any]], article_count: int, *,
                          epoch: int | None = None) -> Any:
        body: dict[str, Any] = {"allocation_id": allocation_id, "task_id": task_id,
                                "results": list(results), "article_count": article_count}
        return self._map(self._call(Call("POST", "/report-completion",
                                         body=self._stamp(body, epoch))),
                         _answer(AllocationAnswer, "POST /report-completion"))

    def feeds(self, *, limit: int = 100, offset: int = 0) -> Any:
        return self._call(Call("GET", "/feeds", params={"limit": limit, "offset": offset}))

    def message_tasks(self) -> Any:
        return self._call(Call("GET", "/message-tasks"))

    def _map(self, value: Any, fn: Callable[[Any], Any]) -> Any:
        return fn(value)


def max_wait(wait: float) -> float:
    return min(60.0, max(0.0, float(wait)))


def _parse(model: type[A], data: dict[str, Any], route: str) -> A:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ()))
        raise ParentServerError(
            f"the answer to {route} does not follow the protocol ({field}: {err.get('msg')})",
            hint="is cascade.parent_api_url pointing at a Cascade parent of this protocol "
                 "version?") from None


def _answer(model: type[A], route: str) -> Callable[[Any], A | None]:
    """The envelope's ``data`` as ``model``; None when it is not an object (nothing to read)."""
    def parse(data: Any) -> A | None:
        return _parse(model, data, route) if isinstance(data, dict) else None
    return parse


def _as_list(data: Any) -> list[TaskPackage]:
    return [_parse(TaskPackage, d, "POST /claim-task") for d in _package_dicts(data)]


def _package_dicts(data: Any) -> list[dict[str, Any]]:
    if data is None:
        return []
    if isinstance(data, list):
        return [d for d in data if isinstance(d, dict)]
    if isinstance(data, dict):
        # Either one package, or a wrapper such as {"tasks": [...]}.
        for key in ("tasks", "packages", "list"):
            if isinstance(data.get(key), list):
                return [d for d in data[key] if isinstance(d, dict)]
        return [data]
    raise ParentServerError(f"claim-task answered an unexpected data type: {type(data).__name__}")


class ParentClient(_Core):
    """Blocking client: one long-lived ``httpx.Client`` per instance. Use as a context manager."""

    def __init__(self, base_url: str, api_key: str, api_secret: str, *,
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None]
                 | None = None, **kw: Any) -> None:
        super().__init__(base_url, api_key, api_secret, **kw)
        self._http = httpx.Client(transport=transport, follow_redirects=False, trust_env=True)
        self._sleep = sleep

    def _call(self, call: Call) -> Any:
        kwargs = self._retry_kwargs(call)
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep
        for attempt in Retrying(**kwargs):
            with attempt:
                return self._once(call)
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, call: Call) -> Any:
        request = self._build(self._http, call)
        try:
            response = self._http.send(request)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, call) from exc
        return self._interpret(response, call)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ParentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncParentClient(_Core):
    """Asyncio client: one long-lived ``httpx.AsyncClient``. Route methods are awaitables."""

    def __init__(self, base_url: str, api_key: str, api_secret: str, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Awaitable[None]] | None = None, **kw: Any) -> None:
        super().__init__(base_url, api_key, api_secret, **kw)
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
        self._http = httpx.AsyncClient(transport=transport, follow_redirects=False,
                                       trust_env=True, limits=limits)
        self._sleep = sleep

    def _call(self, call: Call) -> Awaitable[Any]:
        return self._acall(call)

    async def _acall(self, call: Call) -> Any:
        kwargs = self._retry_kwargs(call)
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep
        async for attempt in AsyncRetrying(**kwargs):
            with attempt:
                return await self._once(call)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, call: Call) -> Any:
        request = self._build(self._http, call)
        try:
            response = await self._http.send(request)
        except httpx.TransportError as exc:
            raise self._transport_error(exc, call) from exc
        return self._interpret(response, call)

    def _map(self, value: Any, fn: Callable[[Any], Any]) -> Any:
        async def mapped() -> Any:
            return fn(await value)
        return mapped()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncParentClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def client_from_settings(settings: Any, *, clock: Clock | None = None,
                         asynchronous: bool = False, **kw: Any) -> _Core:
    """Build a client from ``Settings`` (the ``cascade:`` block). Caller checks the config first
    with ``config.child_config_problems``."""
    c = settings.cascade
    cls = AsyncParentClient if asynchronous else ParentClient
    return cls(c.parent_api_url or "", c.api_key or "", c.api_secret or "",
               auth_mode=c.auth_mode, clock=clock, **kw)
