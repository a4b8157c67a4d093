"""Fetchers: turn one feed of a task package into articles.

Built in: ``rss`` / ``atom`` (feedparser over httpx), ``jsonfeed`` (JSON Feed 1.x) and ``command``
(a configured program printing articles as JSON). More come from the entry-point group
``cascade.fetchers``; a configured ``child.commands`` entry whose name equals a feed's ``kind``
also serves that kind. Every failure is a ``FetchError`` with a readable message: the worker turns
it into a per-feed ``failed`` result (the original's ``处理公众号失败``), never a lost allocation.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import logging
import os
import select
import signal
import time
import urllib.request
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import feedparser
import httpcore
import httpx

from cascade_cli.child import adapters, fastparse
from cascade_cli.child import transport as feed_transport
from cascade_cli.child.articles import clip as _clip
from cascade_cli.config import ChildSection, CommandSpec
from cascade_cli.errors import FetchError
from cascade_cli.protocol import PackageFeed

log = logging.getLogger("cascade.child.fetch")

ENTRY_POINT_GROUP = "cascade.fetchers"
MAX_REDIRECTS = 5
# Documents up to this size are parsed on the event loop (~50 ms at most; a typical 20 KB feed
# takes ~7 ms): handing each parse to a thread and back cost ~0.4 ms of CPU per feed (GIL
# hand-offs between the two threads, cross-thread wake-ups), 5% of all a child does. Bigger ones
# go to ``FetchContext.parse_executor`` (or a worker thread) so the loop never stalls long.
INLINE_PARSE_BYTES = 128 * 1024



@dataclass(frozen=True)
class FeedSpec:
    """One feed of a task package."""

    id: str
    url: str
    kind: str = "rss"
    mp_name: str = ""
    faker_id: str | None = None
    etag: str | None = None
    last_modified: str | None = None

    @classmethod
    def from_package(cls, item: PackageFeed) -> FeedSpec:
        return cls(id=item.id or "", url=item.url or "", kind=item.kind or "rss",
                   mp_name=item.mp_name or "", faker_id=item.faker_id,
                   etag=item.etag or None, last_modified=item.last_modified or None)


@dataclass
class FetchOutcome:
    """What a fetcher found. ``not_modified`` means a 304 (or the command said so)."""

    articles: list[dict[str, Any]] = field(default_factory=list)
    not_modified: bool = False
    etag: str | None = None
    last_modified: str | None = None


@dataclass
class FetchContext:
    """Shared by all fetchers of one child process.

    ``parse_executor``: where documents over ``INLINE_PARSE_BYTES`` are parsed. The daemon gives
    it one dedicated thread, so a big document never holds up the event loop (heartbeats, lease
    renewals, uploads, other fetches' I/O) for long; without it they go to a worker thread.
    """

    http: httpx.AsyncClient
    settings: ChildSection
    parse_executor: Executor | None = None


@runtime_checkable
class Fetcher(Protocol):
    """A plug-in point: ``async fetch(feed, ctx) -> FetchOutcome``; raise ``FetchError``."""

    async def fetch(self, feed: FeedSpec, ctx: FetchContext) -> FetchOutcome: ...


# --- article normalisation -----------------------------------------------------------------


def normalise_articles(items: Any, feed_id: str) -> list[dict[str, Any]]:
    if not isinstance(items, list):
        raise FetchError("expected a list of articles")
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        art = {k: item.get(k) for k in ("id", "guid", "title", "url", "pic_url", "description",
                                        "content", "author", "publish_time")}
        for key in ("title", "url", "guid", "id", "author", "pic_url", "description", "content"):
            if art.get(key) is not None and not isinstance(art[key], str):
                art[key] = str(art[key])
        art["feed_id"] = feed_id
        clipped = _clip(art)
        if clipped:
            out.append(clipped)
    return out


# Entries are FeedParserDicts: their ``get`` goes through an alias table (``guid`` -> ``id``,
# ``description`` -> ``summary``...) on every call. The keys read here are the canonical names
# the table maps to, so the plain ``dict.get`` returns the same values at a third of the cost.
_get = dict.get


def _entry_time(entry: Any) -> int | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = _get(entry, key)
        if value:
            try:
                return calendar.timegm(value)
            except (TypeError, ValueError, OverflowError):
                continue
    return None


def _entry_image(entry: Any) -> str | None:
    for key in ("media_thumbnail", "media_content"):
        items = _get(entry, key)
        if items and isinstance(items, list) and isinstance(items[0], dict):
            url = items[0].get("url")
            if url:
                return str(url)
    for link in _get(entry, "links") or []:
        if link.get("rel") == "enclosure" and str(link.get("type", "")).startswith("image/"):
            return str(link.get("href"))
    return None


def parse_xml_feed(body: bytes, content_type: str | None, feed_id: str,
                   base_url: str = "") -> list[dict[str, Any]]:
    # No content-location: feedparser would "resolve" a relative guid against the feed URL and
    # change the article's identity whenever the feed moves.
    headers = {"content-type": content_type} if content_type else {}
    parsed = feedparser.parse(body, response_headers=headers)
    entries = parsed.get("entries") or []
    version = parsed.get("version") or ""
    if not entries and not version:
        head = body[:512].lstrip().lower()
        if (content_type or "").startswith("text/html") or head.startswith(
                (b"<!doctype html", b"<html")):
            raise FetchError("the URL serves an HTML page, not a feed (wrong URL, or a login/"
                             "error page of the bridge?)")
        problem = parsed.get("bozo_exception")
        raise FetchError(f"not a valid RSS/Atom feed: {problem or 'no feed elements found'}")
    out = []
    get = _get
    for e in entries:
        content = None
        if get(e, "content"):
            with contextlib.suppress(AttributeError, IndexError, KeyError, TypeError):
                content = e["content"][0].get("value")
        link = get(e, "link")
        art = {"guid": get(e, "id") or link, "title": get(e, "title", ""),
               "url": link if link is not None else "", "description": get(e, "summary"),
               "content": content, "author": get(e, "author"), "publish_time": _entry_time(e),
               "pic_url": _entry_image(e), "feed_id": feed_id}
        clipped = _clip(art)
        if clipped:
            out.append(clipped)
    if not out and entries and parsed.get("bozo"):
        # Lenient parsing salvaged nothing usable from a broken document: say why.
        raise FetchError(f"malformed feed, no usable item: {parsed.get('bozo_exception')}")
    return out


def _decode_json(body: bytes, content_type: str | None) -> Any:
    charset = None
    if content_type and "charset=" in content_type.lower():
        charset = content_type.lower().split("charset=", 1)[1].split(";")[0].strip().strip('"')
    try:
        text = body.decode(charset) if charset and charset not in ("utf-8", "utf8") else \
            body.decode("utf-8-sig")
    except (LookupError, UnicodeDecodeError) as exc:
        raise FetchError(f"JSON feed is not valid {charset or 'UTF-8'} text: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FetchError(f"malformed JSON: {exc.msg} at line {exc.lineno} column "
                         f"{exc.colno}") from None


def parse_json_feed(body: bytes, content_type: str | None, feed_id: str) -> list[dict[str, Any]]:
    head = body[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        raise FetchError("the URL serves an HTML page, not a JSON Feed")
    doc = _decode_json(body, content_type)
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise FetchError("not a JSON Feed: expected an object with an 'items' list")
    out = []
    for item in doc["items"]:
        if not isinstance(item, dict):
            continue
        authors = item.get("authors") or ([item["author"]] if item.get("author") else [])
        author = authors[0].get("name") if authors and isinstance(authors[0], dict) else None
        art = {"guid": str(item.get("id") or item.get("url") or ""),
               "title": str(item.get("title") or ""), "url": str(item.get("url") or ""),
               "description": item.get("summary"),
               "content": item.get("content_html") or item.get("content_text"),
               "author": author, "pic_url": item.get("image") or item.get("banner_image"),
               "publish_time": item.get("date_published") or item.get("date_modified"),
               "feed_id": feed_id}
        clipped = _clip({k: (v if not isinstance(v, dict | list) else None)
                         for k, v in art.items()})
        if clipped:
            out.append(clipped)
    return out


# --- HTTP fetchers -------------------------------------------------------------------------


async def read_limited(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FetchError(f"feed is {int(declared)} bytes, more than child.max_feed_bytes "
                         f"({limit})")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise FetchError(f"feed is larger than child.max_feed_bytes ({limit} bytes); "
                             "stopped reading")
        chunks.append(chunk)
    return b"".join(chunks)


class HttpFeedFetcher:
    """RSS, Atom and JSON Feed over HTTP(S) with conditional GET.

    ``parser``: ``fastfeedparser`` tries the fast path first (``fastparse``: same articles, or
    it declines and feedparser parses the document); ``feedparser`` uses feedparser only.
    """

    def __init__(self, kind: str = "rss", parser: str = "feedparser") -> None:
        self.kind = kind
        self.fast = parser == "fastfeedparser" and fastparse.AVAILABLE

    async def fetch(self, feed: FeedSpec, ctx: FetchContext) -> FetchOutcome:
        scheme = urlsplit(feed.url).scheme.lower()
        if scheme not in ("http", "https"):
            raise FetchError(f"feed URL must be http(s), got {feed.url!r}")
        headers = {"User-Agent": ctx.settings.user_agent,
                   "Accept": "application/feed+json, application/json;q=0.9"
                   if self.kind == "jsonfeed" else
                   "application/rss+xml, application/atom+xml, application/xml;q=0.9, "
                   "text/xml;q=0.8, */*;q=0.5"}
        if feed.etag:
            headers["If-None-Match"] = feed.etag
        if feed.last_modified:
            headers["If-Modified-Since"] = feed.last_modified
        timeout = ctx.settings.fetch_timeout
        try:
            # One deadline for the whole fetch: a server dripping bytes cannot hold us longer.
            async with asyncio.timeout(timeout):
                async with ctx.http.stream("GET", feed.url, headers=headers,
                                           timeout=timeout) as response:
                    if response.status_code == 304:
                        return FetchOutcome(not_modified=True, etag=feed.etag,
                                            last_modified=feed.last_modified)
                    if response.status_code >= 400:
                        raise FetchError(f"HTTP {response.status_code} "
                                         f"{response.reason_phrase} from {feed.url}")
                    body = await read_limited(response, ctx.settings.max_feed_bytes)
                    ctype = response.headers.get("Content-Type")
                    etag = response.headers.get("ETag")
                    last_mod = response.headers.get("Last-Modified")
                    final_url = str(response.url)
        except TimeoutError:
            raise FetchError(f"timed out after {timeout:g}s (child.fetch_timeout)") from None
        except httpx.TooManyRedirects:
            raise FetchError(f"more than {MAX_REDIRECTS} redirects (a redirect loop?)") from None
        except httpx.TimeoutException:
            raise FetchError(f"timed out after {timeout:g}s (child.fetch_timeout)") from None
        except httpx.ConnectError as exc:
            raise FetchError(f"cannot connect: {exc}") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"{type(exc).__name__}: {exc}") from None
        if len(body) <= INLINE_PARSE_BYTES:
            articles = self.parse(body, ctype, feed, final_url)
        elif ctx.parse_executor is not None:
            articles = await asyncio.get_running_loop().run_in_executor(
                ctx.parse_executor, self.parse, body, ctype, feed, final_url)
        else:
            articles = await asyncio.to_thread(self.parse, body, ctype, feed, final_url)
        return FetchOutcome(articles=articles, etag=etag, last_modified=last_mod)

    def parse(self, body: bytes, ctype: str | None, feed: FeedSpec,
              url: str) -> list[dict[str, Any]]:
        looks_json = body[:64].lstrip().startswith((b"{", b"\xef\xbb\xbf{"))
        if self.kind == "jsonfeed" or looks_json or "json" in (ctype or "").lower():
            return parse_json_feed(body, ctype, feed.id)
        if self.fast:
            articles = fastparse.parse(body, ctype, feed.id)
            if articles is not None:
                return articles
        return parse_xml_feed(body, ctype, feed.id, url)


# --- command fetcher -----------------------------------------------------------------------


def _command_env(feed: FeedSpec) -> dict[str, str]:
    # Never hand the child's own configuration (secrets included) to a third-party program.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADE_")}
    env.update({"CASCADE_FEED_URL": feed.url, "CASCADE_FEED_ID": feed.id,
                "CASCADE_FEED_NAME": feed.mp_name, "CASCADE_FEED_KIND": feed.kind,
                "CASCADE_FEED_FAKER_ID": feed.faker_id or "",
                "CASCADE_FEED_ETAG": feed.etag or "",
                "CASCADE_FEED_LAST_MODIFIED": feed.last_modified or ""})
    return env


def _render_argv(argv: list[str], feed: FeedSpec) -> list[str]:
    values = {"url": feed.url, "feed_id": feed.id, "mp_name": feed.mp_name,
              "faker_id": feed.faker_id or "", "kind": feed.kind}
    out = []
    for arg in argv:
        for key, value in values.items():
            arg = arg.replace("{" + key + "}", value)
        out.append(arg)
    return out


class CommandFetcher:
    """Runs ``child.commands[NAME].argv``; its standard output is JSON articles.

    The command name is ``NAME`` in a ``command://NAME/...`` feed URL, else the feed's kind when a
    command of that name exists, else the one named ``default`` (or the only one configured).
    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name

    def resolve(self, feed: FeedSpec, commands: Mapping[str, CommandSpec]) -> tuple[str,
                                                                                    CommandSpec]:
        parts = urlsplit(feed.url)
        candidates = [self.name] if self.name else []
        if parts.scheme == "command" and parts.netloc:
            candidates.insert(0, parts.netloc)
        candidates += [feed.kind, "default"]
        for name in candidates:
            if name and name in commands:
                return name, commands[name]
        if len(commands) == 1 and not (parts.scheme == "command" and parts.netloc):
            return next(iter(commands.items()))
        wanted = candidates[0] if candidates else "default"
        raise FetchError(f"no command '{wanted}' configured: add child.commands.{wanted}.argv "
                         f"to this child's config")

    async def fetch(self, feed: FeedSpec, ctx: FetchContext) -> FetchOutcome:
        name, spec = self.resolve(feed, ctx.settings.commands)
        argv = _render_argv(spec.argv, feed)
        limit = ctx.settings.max_feed_bytes
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=_command_env(feed),
                start_new_session=True, limit=limit)
        except (FileNotFoundError, PermissionError) as exc:
            raise FetchError(f"command '{name}' cannot start: {exc}") from None
        try:
            async with asyncio.timeout(spec.timeout):
                stdout, stderr = await _communicate_limited(proc, limit)
        except TimeoutError:
            await _stop(proc)
            raise FetchError(f"command '{name}' timed out after {spec.timeout:g}s "
                             f"(child.commands.{name}.timeout)") from None
        except FetchError:  # too much output: already killed, its pipes read to the end
            await proc.wait()
            raise
        except asyncio.CancelledError:
            _kill_group(proc)
            raise
        if proc.returncode != 0:
            tail = stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise FetchError(f"command '{name}' exited with status {proc.returncode}"
                             + (f": {' | '.join(tail)}" if tail else ""))
        try:
            doc = json.loads(stdout.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            snippet = stdout[:80].decode("utf-8", "replace")
            raise FetchError(f"command '{name}' printed something that is not JSON articles "
                             f"({exc}): {snippet!r}") from None
        if isinstance(doc, dict):
            if doc.get("not_modified"):
                return FetchOutcome(not_modified=True, etag=doc.get("etag") or feed.etag,
                                    last_modified=doc.get("last_modified") or feed.last_modified)
            items = doc.get("articles", doc.get("items"))
            outcome = FetchOutcome(etag=doc.get("etag"), last_modified=doc.get("last_modified"))
        else:
            items, outcome = doc, FetchOutcome()
        if not isinstance(items, list):
            raise FetchError(f"command '{name}' must print a JSON list of articles or "
                             "{\"articles\": [...]}")
        outcome.articles = normalise_articles(items, feed.id)
        return outcome


async def _communicate_limited(proc: asyncio.subprocess.Process,
                               limit: int) -> tuple[bytes, bytes]:
    assert proc.stdout is not None and proc.stderr is not None

    async def read(stream: asyncio.StreamReader, cap: int) -> bytes:
        buf = bytearray()
        over = False
        while chunk := await stream.read(65536):
            if over:
                continue  # discarded: read on to the end, see _stop
            buf += chunk
            if len(buf) > cap:
                over = True
                _kill_group(proc)
        if over:
            raise FetchError(f"command output is larger than child.max_feed_bytes ({cap})")
        return bytes(buf)

    out, err = await asyncio.gather(read(proc.stdout, limit), read(proc.stderr, 1024 * 1024))
    await proc.wait()
    return out, err


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Kill the command's process group, read what its pipes still hold, and reap it.

    asyncio's ``Process.wait()`` returns only once both pipes are closed, and a pipe is seen
    closed only when read to its end: a pipe left unread (its reader paused on a full
    buffer) kept ``wait()`` waiting for ever after the command was killed."""
    _kill_group(proc)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                while await stream.read(65536):
                    continue  # what is left is discarded
    await proc.wait()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


# --- registry ------------------------------------------------------------------------------


class FetcherRegistry:
    """Kind -> fetcher. Built once per child from built-ins, commands and entry points."""

    def __init__(self, settings: ChildSection, *, load_plugins: bool = True) -> None:
        self.settings = settings
        parser = settings.feed_parser
        self._fetchers: dict[str, Fetcher] = {
            "rss": HttpFeedFetcher("rss", parser), "atom": HttpFeedFetcher("atom", parser),
            "jsonfeed": HttpFeedFetcher("jsonfeed", parser), "command": CommandFetcher(),
        }
        self.plugin_errors: dict[str, str] = {}
        if load_plugins:
            self._load_plugins()

    def _load_plugins(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                obj = ep.load()
                fetcher = obj(self.settings) if isinstance(obj, type) or (
                    callable(obj) and not isinstance(obj, Fetcher)) else obj
                if not isinstance(fetcher, Fetcher):
                    raise TypeError("it does not provide 'async fetch(feed, ctx)'")
            except Exception as exc:  # noqa: BLE001 - a broken plug-in must not stop the child
                self.plugin_errors[ep.name] = f"{type(exc).__name__}: {exc}"
                log.warning("fetcher plug-in '%s' (%s) not loaded: %s", ep.name, ep.value, exc)
                continue
            self._fetchers[ep.name] = fetcher

    def register(self, kind: str, fetcher: Fetcher) -> None:
        self._fetchers[kind] = fetcher

    def kinds(self) -> list[str]:
        return sorted(set(self._fetchers) | set(self.settings.commands))

    def get(self, feed: FeedSpec) -> Fetcher:
        kind = (feed.kind or "rss").lower()
        if kind in self._fetchers:
            return self._fetchers[kind]
        if kind in self.settings.commands:
            return CommandFetcher(kind)
        raise FetchError(f"no fetcher for kind '{kind}' on this child (known: "
                         f"{', '.join(self.kinds())}); install the plug-in or add "
                         f"child.commands.{kind}")


def host_key(feed: FeedSpec) -> str:
    parts = urlsplit(feed.url)
    if parts.scheme in ("http", "https"):
        return (parts.hostname or "").lower()
    return f"{parts.scheme or feed.kind}:{parts.netloc}"


def _socket_readable(sock: Any) -> bool:
    """True if an idle keep-alive socket is readable (closed by the server, or dead)."""
    try:
        if sock.fileno() < 0:
            return True
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return True


class _CheapProbeStream(httpcore.AsyncNetworkStream):
    """A network stream whose keep-alive probe costs one poll() and nothing else.

    Before every request httpcore asks each idle pooled connection whether its socket became
    readable (the server closed it). Through anyio that builds a dict of attribute getters and
    calls getpeername() each time; at fetch concurrency 32 that was ~10% of a child's CPU.
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._sock = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        return _CheapProbeStream(await self._inner.start_tls(ssl_context, server_hostname,
                                                             timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable" and self._sock is not None:
            return _socket_readable(self._sock)
        return self._inner.get_extra_info(info)


class _CheapProbeBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self._inner = inner

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        return _CheapProbeStream(await self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address,
            socket_options=socket_options))

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        return _CheapProbeStream(await self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _cheap_probes(client: httpx.AsyncClient) -> bool:
    """Wrap the network backend of every httpcore pool of ``client`` (plain and proxied).

    Relies on httpx/httpcore internals (``adapters``); if a future version renames them the
    client simply keeps the default backend (slower, same behaviour).
    """
    # The client's own transport, the proxy mounts, and the httpx transport a FeedTransport
    # mount falls back to (for what it does not handle itself).
    mounted = adapters.client_transports(client)
    wrapped = False
    for transport in (getattr(t, "fallback", t) for t in mounted):
        backend = adapters.pool_network_backend(transport)
        if backend is not None and not isinstance(backend, _CheapProbeBackend):
            adapters.set_pool_network_backend(transport, _CheapProbeBackend(backend))
            wrapped = True
    return wrapped


def make_http_client(settings: ChildSection) -> httpx.AsyncClient:
    """The feed-fetching client (separate from the parent client: different limits/timeouts).

    Direct GETs go through ``transport.FeedTransport`` (see that module for why) unless
    ``child.transport`` is ``httpx``; everything else, and the environment's proxies, through
    httpx's own transports.
    """
    # No more connections than fetches in flight: httpcore scans its whole pool per request.
    limits = httpx.Limits(max_connections=settings.fetch_concurrency + 2,
                          max_keepalive_connections=settings.fetch_concurrency)
    # A mount, not ``transport=``: httpx then still mounts the environment's proxies
    # (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), whose more specific patterns win over "all://".
    # ALL_PROXY is itself the "all://" mount: with it set, every request goes to the proxy
    # and the direct transport is not mounted at all.
    # child.transport: httpx leaves every request to httpx's own transport.
    mounts: dict[str, httpx.AsyncBaseTransport] | None = None
    if settings.transport == "auto" and "all" not in urllib.request.getproxies():
        fallback = httpx.AsyncHTTPTransport(limits=limits, trust_env=True)
        mounts = {"all://": feed_transport.FeedTransport(
            ssl_context=feed_transport.tls_context(), fallback=fallback,
            max_keepalive=settings.fetch_concurrency)}
    client = httpx.AsyncClient(
        follow_redirects=True, max_redirects=MAX_REDIRECTS, limits=limits,
        timeout=settings.fetch_timeout, trust_env=True,
        headers={"User-Agent": settings.user_agent}, mounts=mounts)
    _cheap_probes(client)
    return client


def monotonic_ms(start: float) -> int:
    return int((time.monotonic() - start) * 1000)
