"""The feed transport under httpx: keep-alive, bodies of every framing, stale connections."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from cascade_cli.child.fetchers import make_http_client
from cascade_cli.child.transport import FeedTransport, tls_context, transport_for_parent
from cascade_cli.config import ChildSection

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


def serve(handler: Handler, check: Callable[[str, list[int]], Awaitable[None]]) -> list[int]:
    """Run ``check(base_url, connections)`` against a raw server; returns per-connection counts
    of requests."""
    connections: list[int] = []

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(connections)
        connections.append(0)
        try:
            await handler(reader, writer, index)
        except (asyncio.IncompleteReadError, ConnectionError):
            return  # the client under test hung up: that is what several tests do on purpose
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await check(f"http://127.0.0.1:{port}", connections)
        finally:
            server.close()

    asyncio.run(main())
    return connections


def client() -> httpx.AsyncClient:
    http = make_http_client(ChildSection(fetch_timeout=5))
    assert isinstance(http._transport_for_url(httpx.URL("http://127.0.0.1/")), FeedTransport)
    return http


def test_keep_alive_gzip_chunked_and_close_delimited() -> None:
    body = b"<rss>" + b"x" * 50_000 + b"</rss>"
    packed = gzip.compress(body)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      index: int) -> None:
        while True:
            head = await read_head(reader)
            path = head.split(b" ")[1]
            if path == b"/gz":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(packed), packed))
            elif path == b"/chunked":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for i in range(0, len(body), 7000):
                    part = body[i:i + 7000]
                    writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
            elif path == b"/eof":  # no length: the body is whatever comes before the close
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)
                await writer.drain()
                return
            await writer.drain()

    async def check(url: str, connections: list[int]) -> None:
        async with client() as http:
            for path in ("/gz", "/chunked", "/gz", "/chunked"):
                r = await http.get(url + path)
                assert r.status_code == 200 and r.content == body
            assert len(connections) == 1  # one kept-alive connection for all four
            r = await http.get(url + "/eof")
            assert r.content == body
            r = await http.get(url + "/gz")
            assert r.content == body and len(connections) == 2

    serve(handler, check)


def test_idle_connection_closed_by_the_server_is_replaced() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      index: int) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        # then close the kept-alive connection without a word, as servers do

    async def check(url: str, connections: list[int]) -> None:
        async with client() as http:
            assert (await http.get(url + "/a")).text == "ok"
            await asyncio.sleep(0.1)
            assert (await http.get(url + "/b")).text == "ok"
        assert len(connections) == 2

    serve(handler, check)


def test_errors_are_httpx_errors_and_other_methods_fall_back() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      index: int) -> None:
        head = await read_head(reader)
        if head.startswith(b"POST"):
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            data = await reader.readexactly(length)
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(data), data))
        elif b"/garbage" in head:
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        elif b"/cut" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
        elif b"/slow" in head:
            await asyncio.sleep(2)
        await writer.drain()

    async def check(url: str, connections: list[int]) -> None:
        async with client() as http:
            r = await http.post(url + "/p", content=b"hello")
            assert r.status_code == 201 and r.content == b"hello"
            with pytest.raises(httpx.RemoteProtocolError):
                await http.get(url + "/garbage")
            with pytest.raises(httpx.ReadError):
                await http.get(url + "/cut")
            with pytest.raises(httpx.ReadTimeout):
                await http.get(url + "/slow", timeout=0.3)
            with pytest.raises(httpx.LocalProtocolError):
                await http.get(url + "/h", headers={"If-None-Match": "a\r\nInjected: 1"})

    serve(handler, check)


def test_environment_proxies_keep_httpx_own_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "intranet.example")
    http = make_http_client(ChildSection())
    proxied = http._transport_for_url(httpx.URL("http://feeds.example.com/rss"))
    assert not isinstance(proxied, FeedTransport)  # httpx's proxy transport
    assert isinstance(http._transport_for_url(httpx.URL("https://feeds.example.com/rss")),
                      FeedTransport)  # no HTTPS_PROXY: direct
    # NO_PROXY: not through the proxy
    assert http._transport_for_url(httpx.URL("http://intranet.example/rss")) is not proxied
    asyncio.run(http.aclose())


def test_all_proxy_sends_every_request_to_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    http = make_http_client(ChildSection())
    for url in ("http://feeds.example.com/rss", "https://feeds.example.com/rss"):
        chosen = http._transport_for_url(httpx.URL(url))
        assert not isinstance(chosen, FeedTransport)
        assert chosen is not http._transport  # the proxy's transport, not a direct one
    asyncio.run(http.aclose())


@pytest.mark.parametrize("later", [False, True], ids=["same-segment", "while-idle"])
def test_unsolicited_bytes_retire_the_connection(later: bool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      index: int) -> None:
        while True:
            await read_head(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            if index == 0:  # then an unsolicited, half response
                if later:
                    await writer.drain()
                    await asyncio.sleep(0.03)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Len")
            await writer.drain()

    async def check(url: str, connections: list[int]) -> None:
        async with client() as http:
            assert (await http.get(url + "/a")).text == "ok"
            await asyncio.sleep(0.1)
            assert (await http.get(url + "/b")).text == "ok"  # on a fresh connection
        assert len(connections) == 2

    serve(handler, check)


def test_a_reset_during_a_close_delimited_body_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      index: int) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 1000)
        await writer.drain()
        sock = writer.get_extra_info("socket")
        import socket
        import struct
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST, not FIN: the body did not end

    async def check(url: str, connections: list[int]) -> None:
        async with client() as http:
            with pytest.raises(httpx.ReadError):
                await http.get(url + "/cut")

    serve(handler, check)


def test_fallback_transports_get_the_cheap_idle_probes() -> None:
    from cascade_cli.child.fetchers import _CheapProbeBackend

    http = make_http_client(ChildSection())
    direct = http._transport_for_url(httpx.URL("http://feeds.example.com/rss"))
    assert isinstance(direct, FeedTransport)
    for transport in (direct.fallback, http._transport):
        assert isinstance(transport._pool._network_backend, _CheapProbeBackend)  # type: ignore[attr-defined]
    asyncio.run(http.aclose())


def test_bodies_go_direct_only_when_allowed_and_in_memory() -> None:
    """The feed client sends bodies through httpx (it never sends any); the parent client's
    transport (``bodies=True``) sends a body it holds whole, and streams still go to httpx."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      index: int) -> None:
        while True:
            head = await read_head(reader)
            per_connection[index] = per_connection.get(index, 0) + 1
            lowered = head.lower()
            if b"transfer-encoding: chunked" in lowered:
                data = b""
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    chunk = await reader.readexactly(size + 2)
                    if size == 0:
                        break
                    data += chunk[:-2]
            else:
                length = int(lowered.split(b"content-length: ")[1].split(b"\r\n")[0])
                data = await reader.readexactly(length)
            method = head.split(b" ", 1)[0]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(method) + 1 + len(data), method + b" " + data))
            await writer.drain()

    per_connection: dict[int, int] = {}
    used: list[str] = []

    class Fallback(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            used.append(request.method)
            return await super().handle_async_request(request)

    async def check(url: str, conns: list[int]) -> None:
        transport = FeedTransport(ssl_context=tls_context(), fallback=Fallback(), bodies=True)
        async with httpx.AsyncClient(transport=transport) as http:
            big = b"x" * 600_000  # more than one socket write
            r = await http.post(url + "/u", content=big)
            assert r.content == b"POST " + big
            r = await http.put(url + "/s", content=b'{"a":1}')
            assert r.content == b'PUT {"a":1}'

            async def stream() -> AsyncIterator[bytes]:
                yield b"par"
                yield b"ts"

            r = await http.post(url + "/stream", content=stream())
            assert r.content == b"POST parts"
        assert used == ["POST"]  # only the streamed body
        assert per_connection[0] == 2  # the two direct requests shared one connection

    serve(handler, check)


def test_child_transport_setting_chooses_the_connection_layer() -> None:
    """``child.transport``: ``auto`` Cascade's own transport for the parent client and direct
    feed GETs, ``httpx`` httpx's own for both."""
    own = transport_for_parent("auto")
    assert isinstance(own, FeedTransport)
    plain_parent = transport_for_parent("httpx")
    assert type(plain_parent) is httpx.AsyncHTTPTransport  # what "auto" falls back to
    assert type(own.fallback) is httpx.AsyncHTTPTransport
    with pytest.raises(ValueError, match="child.transport"):
        transport_for_parent("httptools")  # type: ignore[arg-type]

    async def chosen(kind: str) -> httpx.AsyncBaseTransport:
        http = make_http_client(ChildSection(fetch_timeout=5, transport=kind))
        try:
            return http._transport_for_url(httpx.URL("http://127.0.0.1/"))
        finally:
            await http.aclose()

    assert isinstance(asyncio.run(chosen("auto")), FeedTransport)
    plain = asyncio.run(chosen("httpx"))
    assert isinstance(plain, httpx.AsyncHTTPTransport)
