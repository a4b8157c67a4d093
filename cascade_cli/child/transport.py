"""A lean HTTP/1.1 transport for the feed-fetching ``httpx.AsyncClient``.

httpx stays the client (redirects, cookies, content decoding, URL handling, proxies, errors);
only the connection layer under it changes for direct ``GET`` requests: an asyncio protocol per
connection (uvloop's C transports when the daemon runs on uvloop), responses parsed by
``httptools`` (llhttp, the parser uvicorn uses), and a keep-alive pool without per-request
scans. httpcore + h11 + anyio cost a child about 0.6 ms of CPU per fetched feed (more than a
plain synchronous loop spends on the whole fetch); this layer costs well under 0.1 ms.

The child's client of the parent uses it too, with ``bodies=True``: its requests (uploads of
~0.4 MB of articles, completions, heartbeats, claims) carry their body in memory, and httpcore's
per-request cost was about a fifth of what the child itself spends on a feed besides fetching
and parsing. Anything else (request bodies on the feed client, streamed bodies, a proxied URL,
an HTTP version the parser does not speak) goes to the ordinary ``httpx.AsyncHTTPTransport``.
Errors are httpx's own exception classes, so callers see exactly what they saw before.

``child.transport`` chooses (``transport_for_parent``, ``fetchers.make_http_client``): ``auto``
this transport, ``httpx`` httpx's own for everything (the fallback; same results, a
differential test sends the same requests to a real parent both ways).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Literal, cast

import httptools
import httpx

KEEPALIVE_EXPIRY = 5.0  # seconds an idle connection is kept (httpx's default)
MAX_BUFFER = 1024 * 1024  # unread body bytes before the socket is paused


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection, one request at a time."""

    def __init__(self, key: tuple[bytes, bytes, int]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self.tainted = False  # the server sent more than the answer: never reused
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.until_eof = False  # no Content-Length, not chunked: the body ends at EOF
        self.received = 0
        self.error: Exception | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.paused = False
        self._waiter: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.idle_since:
            # Bytes on an idle keep-alive connection answer no request of ours: its parser
            # state can no longer be trusted, so the connection is not used again.
            self.close()
            return
        self.received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {exc}"))
            self.close()
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("unexpected protocol upgrade"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            return
        if self.headers_done and self.until_eof and exc is None:
            self.complete = True  # a close-delimited body ended (a clean close, not a reset)
            self._wake()
            return
        if self.received == 0:
            err: Exception = httpx.RemoteProtocolError(
                "Server disconnected without sending a response.")
        else:
            err = httpx.ReadError(str(exc) if exc else "connection closed mid-response")
        self._fail(err)

    def pause_writing(self) -> None:  # one small request: never needed
        return

    def resume_writing(self) -> None:
        return

    # --- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            # A second response to one request (bytes the server sent after our answer):
            # ignored, and the connection is not used again.
            self.tainted = True
            return
        self.headers = []
        self.headers_done = False

    def on_status(self, status: bytes) -> None:
        if not self.tainted:
            self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.tainted:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.tainted:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # informational: the real response follows
            self.reason = b""
            return
        self.status = status
        self.headers_done = True
        self.keep_alive = self._parser.should_keep_alive()
        has_length = any(n.lower() in (b"content-length", b"transfer-encoding")
                         for n, _ in self.headers)
        self.until_eof = not has_length and status not in (204, 304)
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.tainted:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > MAX_BUFFER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.tainted or not self.headers_done:
            return  # end of an informational response
        self.complete = True
        self._wake()

    # --- used by the transport -------------------------------------------------------------

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        self._wake()

    async def wait(self, timeout: float | None) -> None:
        """Until something new arrives (headers, body bytes, the end, an error)."""
        if self.error is not None:
            raise self.error
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            if timeout is None:
                await self._waiter
            else:
                async with asyncio.timeout(timeout):
                    await self._waiter
        except TimeoutError:
            raise httpx.ReadTimeout("timed out while reading the response") from None
        finally:
            self._waiter = None
        if self.error is not None:
            raise self.error

    def take(self) -> bytes:
        data = b"".join(self.chunks) if len(self.chunks) > 1 else self.chunks.popleft()
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return data

    def start(self, head: bytes, body: bytes = b"") -> None:
        self.idle_since = 0.0  # in use
        self._reset()
        self.received = 0
        assert self.transport is not None
        self.transport.write(head)
        if body:
            self.transport.write(body)  # buffered by the transport; no copy into the head

    def reusable(self) -> bool:
        return (self.complete and self.keep_alive and not self.closed and not self.until_eof
                and self.error is None and not self.tainted)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Body(httpx.AsyncByteStream):
    def __init__(self, conn: _Connection, pool: FeedTransport, read_timeout: float | None,
                 first: bytes) -> None:
        self._conn = conn
        self._pool = pool
        self._timeout = read_timeout
        self._first = first
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if self._first:
            first, self._first = self._first, b""
            yield first
        while True:
            if conn.chunks:
                yield conn.take()
                continue
            if conn.complete:
                break
            await conn.wait(self._timeout)
        await self.aclose()

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._pool.release(self._conn)


class FeedTransport(httpx.AsyncBaseTransport):
    """Direct GETs over pooled keep-alive connections; everything else to ``fallback``."""

    def __init__(self, *, ssl_context: ssl.SSLContext, fallback: httpx.AsyncBaseTransport,
                 max_keepalive: int = 32, bodies: bool = False) -> None:
        self._ssl = ssl_context
        self.fallback = fallback
        # Also requests with a body already in memory (any method): the parent client's.
        self._bodies = bodies
        self._max_keepalive = max_keepalive
        self._idle: dict[tuple[bytes, bytes, int], list[_Connection]] = {}
        self._idle_count = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        body = b""
        if url.scheme not in ("http", "https") or request.method in ("HEAD", "CONNECT"):
            return await self.fallback.handle_async_request(request)
        if request.method != "GET" or request.headers.get("content-length") or \
                request.headers.get("transfer-encoding"):
            # A body sent here only whole and already read (httpx reads bytes content at
            # once), with its Content-Length; a streamed one goes to httpx's own transport.
            if not self._bodies or request.headers.get("transfer-encoding") or \
                    not isinstance(request.stream, httpx.ByteStream):
                return await self.fallback.handle_async_request(request)
            body = request.content
        timeouts: dict[str, float | None] = request.extensions.get("timeout") or {}
        head = self._head(request)
        key = (url.raw_scheme, url.raw_host, url.port or (443 if url.scheme == "https" else 80))
        for _ in range(2):
            conn = self._take_idle(key)
            if conn is None:
                conn = await self._connect(key, timeouts.get("connect"))
            try:
                conn.start(head, body)
                while not conn.headers_done:
                    await conn.wait(timeouts.get("read"))
            except httpx.RemoteProtocolError:
                conn.close()
                if conn.reused and conn.received == 0:
                    continue  # the server had closed the idle connection: once more, fresh
                raise
            except BaseException:
                conn.close()
                raise
            first = conn.take() if conn.chunks else b""
            return httpx.Response(
                conn.status, headers=conn.headers,
                stream=_Body(conn, self, timeouts.get("read"), first),
                extensions={"http_version": b"HTTP/1.1", "reason_phrase": conn.reason})
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _head(request: httpx.Request) -> bytes:
        lines = [request.method.encode("ascii") + b" " + request.url.raw_path + b" HTTP/1.1"]
        for name, value in request.headers.raw:
            if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name or \
                    b":" in name:
                raise httpx.LocalProtocolError(f"invalid header {name!r}")
            lines.append(name + b": " + value)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def _connect(self, key: tuple[bytes, bytes, int],
                       timeout: float | None) -> _Connection:
        scheme, host, port = key
        hostname = host.decode("ascii")
        tls = scheme == b"https"
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(key), hostname, port,
                    ssl=self._ssl if tls else None,
                    server_hostname=hostname if tls else None)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {hostname}:{port}") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc)) from exc
        return conn

    def _take_idle(self, key: tuple[bytes, bytes, int]) -> _Connection | None:
        conns = self._idle.get(key)
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            self._idle_count -= 1
            if conn.closed or now - conn.idle_since > KEEPALIVE_EXPIRY:
                conn.close()
                continue
            conn.reused = True
            return conn
        return None

    def release(self, conn: _Connection) -> None:
        if not conn.reusable() or self._idle_count >= self._max_keepalive:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        conn.reused = False
        self._idle.setdefault(conn.key, []).append(conn)
        self._idle_count += 1

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                with contextlib.suppress(Exception):
                    conn.close()
        self._idle.clear()
        self._idle_count = 0
        await self.fallback.aclose()


def tls_context() -> ssl.SSLContext:
    """httpx's TLS defaults (certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), HTTP/1.1 only."""
    ctx = httpx.create_ssl_context(trust_env=True)
    # Some TLS builds have no ALPN: the server then picks the protocol, and HTTP/1.1 is
    # still all this connection speaks.
    with contextlib.suppress(NotImplementedError):
        ctx.set_alpn_protocols(["http/1.1"])
    return ctx


PARENT_MAX_CONNECTIONS = 32
PARENT_MAX_KEEPALIVE = 16


def _httpx_transport(max_connections: int, max_keepalive: int) -> httpx.AsyncHTTPTransport:
    limits = httpx.Limits(max_connections=max_connections,
                          max_keepalive_connections=max_keepalive)
    return httpx.AsyncHTTPTransport(limits=limits, trust_env=True)


def parent_transport(max_connections: int = PARENT_MAX_CONNECTIONS,
                     max_keepalive: int = PARENT_MAX_KEEPALIVE) -> FeedTransport:
    """The transport of the child's client of the parent: direct requests with their bodies;
    httpx's own transport (same limits) for anything else. The client is given this transport,
    so httpx mounts no proxy from the environment (HTTP_PROXY, ...) over it: requests to the
    parent go direct."""
    return FeedTransport(ssl_context=tls_context(),
                         fallback=_httpx_transport(max_connections, max_keepalive),
                         max_keepalive=max_keepalive, bodies=True)


TransportKind = Literal["auto", "httpx"]  # child.transport


def transport_for_parent(kind: TransportKind) -> httpx.AsyncBaseTransport:
    """The transport of run-child's client of the parent for ``child.transport``: ``auto``
    is ``parent_transport()``; ``httpx`` is the httpx transport it falls back to, for every
    request (same limits; and, as with ``auto``, no proxy from the environment: httpx mounts
    those only on a client built without a transport)."""
    if kind == "auto":
        return parent_transport()
    if kind == "httpx":
        return _httpx_transport(PARENT_MAX_CONNECTIONS, PARENT_MAX_KEEPALIVE)
    raise ValueError(f"child.transport: must be one of 'auto' or 'httpx', got {kind!r}")
