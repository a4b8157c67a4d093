"""Fetchers against real local HTTP servers: every bad input is a FetchError, never a crash."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cascade_cli.child.fetchers import (
    CommandFetcher,
    FeedSpec,
    FetchContext,
    FetcherRegistry,
    FetchOutcome,
    make_http_client,
)
from cascade_cli.config import ChildSection, CommandSpec
from cascade_cli.errors import FetchError
from tests.child.servers import ScriptedServer, reply

RSS = """<?xml version="1.0" encoding="{enc}"?>
<rss version="2.0"><channel><title>{title}</title><link>http://x/</link>
<item><title>{item}</title><link>http://x/1</link><guid>g1</guid>
<pubDate>Fri, 20 Nov 2026 08:00:00 GMT</pubDate><description>d</description></item>
<item><title>second</title><link>http://x/2</link></item>
</channel></rss>"""


def rss(enc: str = "utf-8", title: str = "T", item: str = "first") -> bytes:
    return RSS.format(enc=enc, title=title, item=item).encode(enc)


def fetch(url: str, kind: str = "rss", cfg: ChildSection | None = None,
          **feed: Any) -> FetchOutcome:
    cfg = cfg or ChildSection(fetch_timeout=2)

    async def go() -> FetchOutcome:
        reg = FetcherRegistry(cfg, load_plugins=False)
        async with make_http_client(cfg) as http:
            spec = FeedSpec(id="F1", url=url, kind=kind, **feed)
            return await reg.get(spec).fetch(spec, FetchContext(http, cfg))

    return asyncio.run(go())


def failure(url: str, kind: str = "rss", cfg: ChildSection | None = None, **feed: Any) -> str:
    with pytest.raises(FetchError) as info:
        fetch(url, kind, cfg, **feed)
    return str(info.value)


def test_rss_ok_with_conditional_get_and_304() -> None:
    def feed(h: Any) -> None:
        if h.headers.get("If-None-Match") == '"v1"':
            reply(h, 304, b"", "application/rss+xml")
        else:
            reply(h, 200, rss(), "application/rss+xml",
                  {"ETag": '"v1"', "Last-Modified": "Fri, 20 Nov 2026 08:00:00 GMT"})

    with ScriptedServer({"/f.xml": feed}) as srv:
        out = fetch(srv.url + "/f.xml")
        assert [a["title"] for a in out.articles] == ["first", "second"]
        assert out.articles[0]["guid"] == "g1" and out.articles[0]["feed_id"] == "F1"
        assert out.articles[0]["publish_time"] == 1795161600
        assert out.etag == '"v1"' and out.last_modified.startswith("Fri")
        again = fetch(srv.url + "/f.xml", etag='"v1"', last_modified=out.last_modified)
        assert again.not_modified and again.articles == [] and again.etag == '"v1"'
        assert srv.requests[-1]["headers"]["If-Modified-Since"] == out.last_modified


@pytest.mark.parametrize("enc", ["gbk", "gb18030", "big5", "iso-8859-1"])
def test_non_utf8_encodings(enc: str) -> None:
    title = {"iso-8859-1": "café", "big5": "級聯公眾號文章"}.get(enc, "级联公众号文章")
    with ScriptedServer({"/f": lambda h: reply(h, 200, rss(enc, item=title),
                                               "text/xml")}) as srv:
        assert fetch(srv.url + "/f").articles[0]["title"] == title


def test_charset_from_http_header_only() -> None:
    body = RSS.replace('<?xml version="1.0" encoding="{enc}"?>\n', "").format(
        enc="", title="t", item="订阅更新").encode("gbk")
    with ScriptedServer({"/f": lambda h: reply(h, 200, body,
                                               "application/xml; charset=gbk")}) as srv:
        assert fetch(srv.url + "/f").articles[0]["title"] == "订阅更新"


def test_atom_and_json_feed() -> None:
    atom = b"""<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>A</title>
    <id>urn:a</id><updated>2026-11-20T08:00:00Z</updated><entry><title>e1</title><id>urn:e1</id>
    <link href="http://x/e1"/><updated>2026-11-20T08:00:00Z</updated></entry></feed>"""
    jf = {"version": "https://jsonfeed.org/version/1.1", "title": "J",
          "items": [{"id": "1", "url": "http://x/j1", "title": "文章",
                     "content_html": "<p>x</p>", "date_published": "2026-11-20T08:00:00Z",
                     "authors": [{"name": "编辑"}]}, "not an item", {"title": "no url"}]}
    with ScriptedServer({"/a": lambda h: reply(h, 200, atom, "application/atom+xml"),
                         "/j": lambda h: reply(h, 200, json.dumps(jf),
                                               "application/feed+json")}) as srv:
        a = fetch(srv.url + "/a", "atom").articles
        assert a[0]["guid"] == "urn:e1" and a[0]["url"] == "http://x/e1"
        j = fetch(srv.url + "/j", "jsonfeed").articles
        assert len(j) == 1 and j[0]["author"] == "编辑" and j[0]["content"] == "<p>x</p>"
        # kind "rss" still recognises a JSON Feed by its content
        assert len(fetch(srv.url + "/j", "rss").articles) == 1


@pytest.mark.parametrize("body,ctype,expect", [
    (b"<rss><channel><item><title>x</broken", "text/xml", "malformed feed"),
    (b"<!DOCTYPE html><html><body>Login</body></html>", "text/html", "HTML page"),
    (b"<html><head><title>502</title></head></html>", "application/rss+xml", "HTML page"),
    (b"", "text/xml", "not a valid RSS/Atom feed"),
    (b"\x00\xff\xfe garbage \x89PNG", "application/octet-stream", "not a valid"),
])
def test_bad_xml_documents_fail_clearly(body: bytes, ctype: str, expect: str) -> None:
    with ScriptedServer({"/f": lambda h: reply(h, 200, body, ctype)}) as srv:
        assert expect in failure(srv.url + "/f")


@pytest.mark.parametrize("body,expect", [
    (b'{"items": [1, 2', "malformed JSON"),
    (b'{"version": "x"}', "not a JSON Feed"),
    (b'[1, 2, 3]', "not a JSON Feed"),
    (b"<!doctype html><p>hi", "HTML page"),
])
def test_bad_json_feeds_fail_clearly(body: bytes, expect: str) -> None:
    with ScriptedServer({"/f": lambda h: reply(h, 200, body, "application/json")}) as srv:
        assert expect in failure(srv.url + "/f", "jsonfeed")


def test_http_errors_and_refused() -> None:
    with ScriptedServer({"/gone": lambda h: reply(h, 410, b"gone", "text/plain")}) as srv:
        assert "HTTP 410" in failure(srv.url + "/gone")
        assert "HTTP 404" in failure(srv.url + "/missing")
    from tests.child.servers import free_port
    assert "cannot connect" in failure(f"http://127.0.0.1:{free_port()}/f")
    assert "must be http(s)" in failure("ftp://example.org/feed")


def test_huge_response_is_cut_off() -> None:
    cfg = ChildSection(fetch_timeout=5, max_feed_bytes=64 * 1024)
    big = b"<rss>" + b"x" * (1024 * 1024) + b"</rss>"

    def chunked(h: Any) -> None:  # no Content-Length: streamed until the limit
        h.send_response(200)
        h.send_header("Content-Type", "text/xml")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for _ in range(64):
            chunk = b"y" * 16384
            h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        h.wfile.write(b"0\r\n\r\n")

    with ScriptedServer({"/big": lambda h: reply(h, 200, big, "text/xml"),
                         "/chunked": chunked}) as srv:
        assert "more than child.max_feed_bytes" in failure(srv.url + "/big", cfg=cfg)
        assert "larger than child.max_feed_bytes" in failure(srv.url + "/chunked", cfg=cfg)


def test_slow_server_times_out() -> None:
    cfg = ChildSection(fetch_timeout=0.5)

    def slow(h: Any) -> None:
        time.sleep(3)
        reply(h, 200, rss(), "text/xml")

    def drip(h: Any) -> None:  # headers at once, then a byte every 0.2 s: only a total deadline
        h.send_response(200)
        h.send_header("Content-Type", "text/xml")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        for _ in range(50):
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(0.2)

    with ScriptedServer({"/slow": slow, "/drip": drip}) as srv:
        for path in ("/slow", "/drip"):
            start = time.monotonic()
            assert "timed out after 0.5s" in failure(srv.url + path, cfg=cfg)
            assert time.monotonic() - start < 2


def test_redirects_followed_and_loops_refused() -> None:
    def loop(h: Any) -> None:
        reply(h, 302, b"", "text/plain", {"Location": "/loop2"})

    def loop2(h: Any) -> None:
        reply(h, 302, b"", "text/plain", {"Location": "/loop"})

    with ScriptedServer({"/old": lambda h: reply(h, 301, b"", "text/plain",
                                                 {"Location": "/new"}),
                         "/new": lambda h: reply(h, 200, rss(), "text/xml"),
                         "/loop": loop, "/loop2": loop2}) as srv:
        assert len(fetch(srv.url + "/old").articles) == 2
        assert "redirect loop" in failure(srv.url + "/loop")


def test_long_fields_are_trimmed_and_urlless_items_dropped() -> None:
    long_title = "标" * 3000
    body = f"""<rss version="2.0"><channel><title>t</title>
    <item><title>{long_title}</title><link>http://x/1</link></item>
    <item><title>no link nor guid</title></item></channel></rss>""".encode()
    with ScriptedServer({"/f": lambda h: reply(h, 200, body, "text/xml")}) as srv:
        arts = fetch(srv.url + "/f").articles
        assert len(arts) == 1 and len(arts[0]["title"]) == 1000


# --- command fetcher -----------------------------------------------------------------------


def write_script(tmp_path: Path, name: str, code: str) -> list[str]:
    path = tmp_path / name
    path.write_text(code, encoding="utf-8")
    return [sys.executable, str(path)]


def cmd_cfg(argv: list[str], timeout: float = 30, **kw: Any) -> ChildSection:
    return ChildSection(commands={"wechat": CommandSpec(argv=argv, timeout=timeout)}, **kw)


def test_command_fetcher_prints_articles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASCADE_API_SECRET", "CSsecretsecretsecretsecretsecret")
    argv = write_script(tmp_path, "ok.py", """
import json, os, sys
assert "CASCADE_API_SECRET" not in os.environ, "secret leaked to the command"
print(json.dumps({"etag": "e2", "articles": [
  {"title": "公众号文章", "url": os.environ["CASCADE_FEED_URL"] + "/1", "publish_time": 1700000000,
   "guid": sys.argv[1]},
  {"title": "bad: no url"}, "junk"]}))
""") + ["{feed_id}"]
    out = fetch("wx://gh_123", "command", cmd_cfg(argv))
    assert out.etag == "e2"
    assert out.articles == [{"title": "公众号文章", "url": "wx://gh_123/1",
                             "publish_time": 1700000000, "guid": "F1", "feed_id": "F1"}]
    # the feed's kind may name the command directly
    assert len(fetch("wx://gh_123", "wechat", cmd_cfg(argv)).articles) == 1
    assert fetch("wx://x", "command", cmd_cfg(write_script(
        tmp_path, "nm.py", 'print(\'{"not_modified": true}\')'))).not_modified


@pytest.mark.parametrize("code,expect", [
    ("import sys; sys.stderr.write('login expired\\n'); sys.exit(3)",
     "exited with status 3: login expired"),
    ("print('Traceback (most recent call last): oops')", "not JSON articles"),
    ("print('{\"articles\": 5}')", "must print a JSON list"),
    ("raise SystemExit(-1)", "exited with status 255"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "exited with status -9"),
])
def test_command_fetcher_crash_or_garbage(tmp_path: Path, code: str, expect: str) -> None:
    assert expect in failure("wx://a", "command", cmd_cfg(write_script(tmp_path, "c.py", code)))


def test_command_fetcher_timeout_kills_the_group(tmp_path: Path) -> None:
    argv = write_script(tmp_path, "hang.py", "import time; time.sleep(60)")
    start = time.monotonic()
    assert "timed out after 0.5s" in failure("wx://a", "command", cmd_cfg(argv, timeout=0.5))
    assert time.monotonic() - start < 3
    # with output still unread in its pipes when it is killed
    chatty = write_script(tmp_path, "chatty.py", "import sys, time\n"
                          "sys.stdout.write(' ' * 1_000_000); sys.stdout.flush()\n"
                          "sys.stderr.write('x' * 200_000); sys.stderr.flush(); time.sleep(60)")
    start = time.monotonic()
    assert "timed out after 0.5s" in failure("wx://a", "command", cmd_cfg(chatty, timeout=0.5))
    assert time.monotonic() - start < 5


def test_command_fetcher_output_limit_and_missing(tmp_path: Path) -> None:
    argv = write_script(tmp_path, "big.py", "import sys; sys.stdout.write('[' + ' ' * 500000)")
    assert "larger than child.max_feed_bytes" in failure(
        "wx://a", "command", cmd_cfg(argv, max_feed_bytes=100_000))
    # Far more than the limit, far faster than it is read: the reader stopped with the pipe
    # full, and the killed command was waited for for ever (asyncio waits for its pipes).
    flood = write_script(tmp_path, "flood.py", "import sys; sys.stdout.write(' ' * 3_000_000)")
    for _ in range(3):
        assert "larger than child.max_feed_bytes (1024)" in failure(
            "wx://a", "command", cmd_cfg(flood, max_feed_bytes=1024))
    assert "cannot start" in failure("wx://a", "command",
                                     cmd_cfg(["/nonexistent/bin/fetcher"]))
    assert "no command 'other' configured" in failure("command://other/x", "command",
                                                      cmd_cfg(["true"]))


def test_unknown_kind_and_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "no fetcher for kind 'zzz'" in failure("http://x/", "zzz")

    class EP:
        def __init__(self, name: str, obj: Any) -> None:
            self.name, self.value, self._obj = name, f"mod:{name}", obj

        def load(self) -> Any:
            if isinstance(self._obj, Exception):
                raise self._obj
            return self._obj

    class Static:
        def __init__(self, settings: ChildSection) -> None:
            self.settings = settings

        async def fetch(self, feed: FeedSpec, ctx: FetchContext) -> FetchOutcome:
            return FetchOutcome(articles=[{"title": "p", "url": feed.url, "feed_id": feed.id}])

    import cascade_cli.child.fetchers as mod
    monkeypatch.setattr(mod, "entry_points", lambda group: [
        EP("static", Static), EP("broken", ImportError("no module named wx")),
        EP("notafetcher", object())])
    reg = FetcherRegistry(ChildSection())
    assert "static" in reg.kinds() and "broken" not in reg.kinds()
    assert "no module named wx" in reg.plugin_errors["broken"]
    assert "notafetcher" in reg.plugin_errors
    assert isinstance(reg.get(FeedSpec(id="a", url="u", kind="static")), Static)
    assert isinstance(reg.get(FeedSpec(id="a", url="u", kind="command")), CommandFetcher)


def test_small_documents_parse_on_the_loop_big_ones_in_the_executor() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from cascade_cli.child.fetchers import INLINE_PARSE_BYTES

    items = "".join(f"<item><title>t{i}</title><link>http://x/{i}</link>"
                    f"<description>{'d' * 2000}</description></item>" for i in range(80))
    big = f'<rss version="2.0"><channel><title>T</title>{items}</channel></rss>'.encode()
    assert len(big) > INLINE_PARSE_BYTES

    class Recording(ThreadPoolExecutor):
        calls = 0

        def submit(self, *a: Any, **kw: Any) -> Any:  # type: ignore[override]
            Recording.calls += 1
            return super().submit(*a, **kw)

    cfg = ChildSection(fetch_timeout=5)

    async def go(url: str) -> FetchOutcome:
        reg = FetcherRegistry(cfg, load_plugins=False)
        with Recording(1) as pool:
            async with make_http_client(cfg) as http:
                spec = FeedSpec(id="F1", url=url)
                return await reg.get(spec).fetch(spec, FetchContext(http, cfg, pool))

    with ScriptedServer({"/small": lambda h: reply(h, 200, rss(), "text/xml"),
                         "/big": lambda h: reply(h, 200, big, "text/xml")}) as srv:
        assert len(asyncio.run(go(srv.url + "/small")).articles) == 2
        assert Recording.calls == 0
        assert len(asyncio.run(go(srv.url + "/big")).articles) == 80
        assert Recording.calls == 1
