"""``NodeFastPath`` answers exactly as FastAPI does, and really serves the plain requests.

The same scenario (good requests, and every kind of bad one) runs against two apps on two
fresh databases: one with ``parent.http_fast_path: auto`` (the default) and one with ``off``
(FastAPI's routing only). Every answer must be the same, status and body, once random ids are
masked; the database must end up the same.
"""

from __future__ import annotations

import json as jsonlib
import math
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi.routing import APIRoute
from opentelemetry import metrics as otel_metrics
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException

from cascade_cli import errors
from cascade_cli.clock import FakeClock
from cascade_cli.config import Settings
from cascade_cli.store import allocations as allocations_mod
from cascade_cli.store import migrate
from cascade_cli.store import nodes as nodes_mod
from cascade_cli.store.engine import Store
from cascade_cli.store.models import Allocation, Article, Event, FeedResult
from cascade_cli.web import adapters
from cascade_cli.web.app import create_app
from cascade_cli.web.fastpath import NodeFastPath
from tests.parent_http.conftest import ADMIN_SECRET, WX, Api, P, with_fast_path

pytestmark = pytest.mark.anyio

_HEX = re.compile(r"[0-9a-f]{32}")
_CREDENTIAL = re.compile(r"CS-[A-Za-z0-9_-]+")
_FEED = re.compile(r"F_t1_\d+|feed \d+")  # which allocation a claim gets is not fixed


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return _FEED.sub("<feed>", _CREDENTIAL.sub("<key>", _HEX.sub("<id>", value)))
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    return value


class Recorder:
    """Sends the scenario's requests and keeps what came back (masked)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.answers: list[tuple[str, int, Any, str | None]] = []

    async def send(self, label: str, method: str, path: str, *, headers: dict[str, str],
                   content: bytes | None = None, content_type: str | None = "application/json",
                   params: dict[str, Any] | None = None) -> Any:
        h = dict(headers)
        if content is not None and content_type is not None:
            h["Content-Type"] = content_type
        r = await self.api.client.request(method, path, headers=h, content=content,
                                          params=params)
        try:
            body = r.json()
        except ValueError:
            body = r.text
        self.answers.append((label, r.status_code, _mask(body), r.headers.get("retry-after")))
        return body


def _body(value: Any) -> bytes:
    return jsonlib.dumps(value).encode()


async def _scenario(api: Api) -> list[tuple[str, int, Any, str | None]]:
    rec = Recorder(api)
    a, b = api.node("a", capacity=4), api.node("b", capacity=4)
    tok = api.token()
    for creds in (a, b):
        await rec.send("heartbeat", "POST", P + "/heartbeat", headers=api.plain(creds),
                       content=_body({"running": []}))
    task_id = await api.setup_task(tok, n_feeds=4)
    await rec.send("dispatch", "POST", P + "/dispatch-task", headers=api.bearer(tok),
                   params={"task_id": task_id})
    pa, pb = api.plain(a), api.plain(b)

    # claims: plain, with bounds, and the forms FastAPI must judge
    pkg = (await rec.send("claim", "POST", P + "/claim-task", headers=pa))["data"]
    await rec.send("claim max=2 wait=0", "POST", WX + "/claim-task", headers=pb,
                   params={"max": "2", "wait": "0"})
    for params in ({"wait": "61"}, {"wait": "-1"}, {"wait": "abc"}, {"max": "0"},
                   {"max": "257"}, {"max": "1.5"}, {"unknown": "1"}, {"wait": " 1"}):
        await rec.send(f"claim {params}", "POST", P + "/claim-task", headers=pa, params=params)
    await rec.send("claim twice max", "POST", P + "/claim-task?max=1&max=2", headers=pa)
    await rec.send("claim admin", "POST", P + "/claim-task", headers=api.bearer(tok))
    await rec.send("claim anonymous", "POST", P + "/claim-task", headers={})
    await rec.send("claim bad secret", "POST", P + "/claim-task",
                   headers={"Authorization": f"AK-SK {a.api_key}:wrong"})
    await rec.send("claim trailing slash", "POST", P + "/claim-task/", headers=pa)
    await rec.send("claim GET", "GET", P + "/claim-task", headers=pa)
    # review: query and method edge cases (accepted ones only with wait=0: no long waits)
    for params in ({"wait": "00"}, {"wait": "0.000000"}, {"wait": "60.0000001"},
                   {"wait": "60.000001"}, {"wait": ""}, {"max": ""}, {"max": "001"},
                   {"max": "+1"}, {"max": "1e0"}, {"wait": "0", "max": "1", "x": ""}):
        await rec.send(f"claim {params}", "POST", P + "/claim-task", headers=pa, params=params)
    for query in ("wait=0+", "w%61it=0", "wait", "&&wait=0&", "max=1;wait=0", "max=%31",
                  "wait=0&w%61it=0", "=0", "WAIT=0"):
        await rec.send(f"claim ?{query}", "POST", P + "/claim-task?" + query, headers=pa)
    await rec.send("claim encoded path", "POST", P + "/claim%2Dtask", headers=pa)
    for method in ("HEAD", "OPTIONS", "PATCH"):
        await rec.send(f"claim {method}", method, P + "/claim-task", headers=pa)
    await rec.send("claim with a body", "POST", P + "/claim-task", headers=pa,
                   content=b'{"max": 2}')

    aid, epoch = pkg["allocation_id"], pkg["epoch"]
    feed = pkg["feeds"][0]["id"]
    executing = {"allocation_id": aid, "status": "executing", "epoch": epoch}
    await rec.send("executing", "PUT", P + "/task-status", headers=pa, content=_body(executing))
    bad_bodies: list[tuple[str, bytes, str | None]] = [
        ("malformed json", b'{"allocation_id": ', "application/json"),
        ("not json at all", b"\xff\xfe", "application/json"),
        ("wrong type", _body({**executing, "epoch": "x"}), "application/json"),
        ("unknown status", _body({**executing, "status": "done"}), "application/json"),
        ("array", _body([executing]), "application/json"),
        ("text/plain", _body(executing), "text/plain"),
        ("no content type", _body(executing), None),
        ("json+suffix", _body(executing), "application/vnd.cascade+json"),
        ("charset", _body(executing), "application/json; charset=utf-8"),
        ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "application/json"),
        ("empty", b"", "application/json"),
    ]
    for label, content, ctype in bad_bodies:
        await rec.send(label, "PUT", P + "/task-status", headers=pa, content=content,
                       content_type=ctype)
    # review: encodings, content types and JSON oddities FastAPI parses with json.loads
    ex = _body(executing)
    odd_bodies: list[tuple[str, bytes, str | None]] = [
        ("uppercase type", ex, "APPLICATION/JSON"),
        ("type with params and spaces", ex, "application/json ;charset=UTF-8 ; x=y"),
        ("type with comment", ex, "application/json (x)"),
        ("type without subtype", ex, "application/"),
        ("utf-16 with BOM", jsonlib.dumps(executing).encode("utf-16"), "application/json"),
        ("utf-32", jsonlib.dumps(executing).encode("utf-32"), "application/json"),
        ("utf-8 BOM", b"\xef\xbb\xbf" + ex, "application/json"),
        ("latin-1 bytes", _body({**executing, "error_message": "x"}).replace(b'"x"', b'"\xe9"'),
         "application/json; charset=latin-1"),
        ("duplicate keys", ex[:-1] + b', "status": "failed", "status": "executing"}',
         "application/json"),
        ("NaN timestamp", ex[:-1] + b', "timestamp": NaN}', "application/json"),
        ("Infinity epoch", _body(executing).replace(f'"epoch": {epoch}'.encode(),
                                                    b'"epoch": Infinity'), "application/json"),
        ("float epoch", _body(executing).replace(f'"epoch": {epoch}'.encode(),
                                                 f'"epoch": {epoch}.0'.encode()),
         "application/json"),
        ("5000-digit epoch", _body(executing).replace(f'"epoch": {epoch}'.encode(),
                                                      b'"epoch": 1' + b"0" * 5000),
         "application/json"),
        ("lone surrogate", ex[:-1] + b', "error_message": "\\ud800"}', "application/json"),
        ("trailing data", ex + b" {}", "application/json"),
        ("trailing whitespace", ex + b" \r\n\t", "application/json"),
        ("null", b"null", "application/json"),
        ("string", b'"executing"', "application/json"),
        ("nul byte", ex + b"\x00", "application/json"),
    ]
    for label, content, ctype in odd_bodies:
        await rec.send(label, "PUT", P + "/task-status", headers=pa, content=content,
                       content_type=ctype)
    await rec.send("empty query", "PUT", P + "/task-status?", headers=pa, content=ex)
    await rec.send("query on a body route", "PUT", P + "/task-status?x=1", headers=pa,
                   content=_body(executing))
    await rec.send("stale epoch", "PUT", P + "/task-status", headers=pa,
                   content=_body({**executing, "epoch": epoch - 1}))
    await rec.send("other node", "PUT", P + "/task-status", headers=pb, content=_body(executing))
    await rec.send("unknown allocation", "PUT", P + "/task-status", headers=pa,
                   content=_body({**executing, "allocation_id": "0" * 32}))

    arts = [{"feed_id": feed, "title": f"t{i}", "url": f"https://e/{feed}/{i}",
             "publish_time": 1700000000 + i} for i in range(5)]
    upload = {"allocation_id": aid, "articles": arts, "epoch": epoch}
    await rec.send("upload", "POST", P + "/upload-articles", headers=pa, content=_body(upload))
    await rec.send("upload again", "POST", WX + "/upload-articles", headers=pa,
                   content=_body(upload))
    limit = api.settings.parent.limits.max_articles_per_request
    await rec.send("upload over the count limit", "POST", P + "/upload-articles", headers=pa,
                   content=_body({**upload, "articles": [{"feed_id": feed, "url": f"u{i}"}
                                                         for i in range(limit + 1)]}))
    signed_body = _body({**upload, "articles": arts[:2]})
    signed = api.signed(a, "POST", P + "/upload-articles", signed_body, nonce="n-fastpath-1")
    await rec.send("upload signed", "POST", P + "/upload-articles", headers=signed,
                   content=signed_body)
    await rec.send("upload signed replayed", "POST", P + "/upload-articles", headers=signed,
                   content=signed_body)
    tampered = signed_body.replace(b'"t0"', b'"t9"')
    await rec.send("upload signed tampered", "POST", P + "/upload-articles",
                   headers=api.signed(a, "POST", P + "/upload-articles", signed_body,
                                      nonce="n-fastpath-2"), content=tampered)

    done = {"allocation_id": aid, "task_id": task_id, "article_count": 5, "epoch": epoch,
            "results": [{"feed_id": f["id"], "status": "success", "article_count": 5}
                        for f in pkg["feeds"]]}
    await rec.send("complete", "POST", P + "/report-completion", headers=pa,
                   content=_body(done))
    await rec.send("complete again", "POST", P + "/report-completion", headers=pa,
                   content=_body(done))
    await rec.send("complete invalid result", "POST", P + "/report-completion", headers=pa,
                   content=_body({**done, "results": [{"status": "success"}]}))
    await rec.send("upload after completion", "POST", P + "/upload-articles", headers=pa,
                   content=_body(upload))
    return rec.answers


def _state(store: Store) -> tuple[Any, ...]:
    with store.session() as s:
        allocs = sorted((a.status, a.epoch, a.article_count, a.new_article_count)
                        for a in s.scalars(select(Allocation)))
        counts = tuple(int(s.scalar(select(func.count()).select_from(m)) or 0)
                       for m in (Article, FeedResult, Event))
    return tuple(allocs), counts


async def _run(tmp_path: Path, settings: Settings, *, fast: bool,
               handled: list[str], metrics_seen: list[Any] | None = None
               ) -> tuple[list[Any], Any]:
    metrics_seen = [] if metrics_seen is None else metrics_seen
    store = Store.from_url(f"sqlite:///{tmp_path / ('fast' if fast else 'slow')}.db")
    migrate.upgrade(store)
    app = create_app(store, FakeClock(), with_fast_path(settings, "auto" if fast else "off"),
                     admin_secret=ADMIN_SECRET)
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1234))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://parent") as client:
            api = Api(client, app, store, FakeClock(), settings)
            handled.clear()
            answers = await _scenario(api)
            metrics_seen[:] = _metrics(app)
        return answers, _state(store)
    finally:
        store.dispose()


async def test_fast_path_answers_exactly_like_fastapi(tmp_path: Path, settings: Settings,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    handled: list[str] = []
    original = APIRoute.handle

    async def counting(self: APIRoute, scope: Any, receive: Any, send: Any) -> None:
        handled.append(self.path)
        await original(self, scope, receive, send)

    monkeypatch.setattr(APIRoute, "handle", counting)
    slow_metrics: list[Any] = []
    fast_metrics: list[Any] = []
    slow, slow_state = await _run(tmp_path, settings, fast=False, handled=handled,
                                  metrics_seen=slow_metrics)
    through_fastapi_when_off = list(handled)
    fast, fast_state = await _run(tmp_path, settings, fast=True, handled=handled,
                                  metrics_seen=fast_metrics)
    through_fastapi_when_on = list(handled)

    assert len(fast) == len(slow)
    for f, s in zip(fast, slow, strict=True):
        assert f == s, f"{f[0]}: fast path {f[1:]} != FastAPI {s[1:]}"
    assert fast_state == slow_state
    # review: request counts and latency observations per (method, route, status), auth
    # failures by reason and claims are the same too
    assert fast_metrics == slow_metrics
    assert {code for _, code, _, _ in fast} >= {200, 400, 401, 403, 404, 405, 409, 413, 422}

    # The plain hot requests never reached FastAPI's routing with the fast path on.
    hot = ("/claim-task", "/task-status", "/upload-articles", "/report-completion")
    off = sum(p.endswith(hot) for p in through_fastapi_when_off)
    on = sum(p.endswith(hot) for p in through_fastapi_when_on)
    served_fast = off - on
    assert served_fast >= 12, (off, on)


# --- Review additions: probes of single requests, straight over ASGI -------------------------
#
# ``_probe`` sends one request to the app with the fast path on, and to one with it off, each
# on its own fresh database, and keeps everything a server would see: status, Retry-After,
# body, and which exception (if any) escaped the app after (or instead of) the answer.

async def _asgi(app: Any, method: str, path: str, *, query: bytes = b"",
                headers: dict[str, str] | None = None, body: bytes = b"",
                after_body: Callable[[], Awaitable[Any]] | None = None) -> dict[str, Any]:
    sent: list[dict[str, Any]] = []
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Any:
        if pending:
            return pending.pop(0)
        if after_body is not None:
            return await after_body()
        await anyio.sleep_forever()

    async def send(message: Any) -> None:
        sent.append(message)

    hdrs = [(b"host", b"parent")] + [(k.lower().encode("latin-1"), v.encode("latin-1"))
                                      for k, v in (headers or {}).items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path,
             "raw_path": path.encode(), "query_string": query, "root_path": "",
             "headers": hdrs, "client": ("10.0.0.1", 1234), "server": ("parent", 80)}
    escaped = None
    try:
        await app(scope, receive, send)
    except Exception as exc:  # noqa: BLE001 - what a server would log
        escaped = type(exc).__name__
    start = next((m for m in sent if m["type"] == "http.response.start"), None)
    raw = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    retry = None
    if start is not None:
        retry = dict(start.get("headers", [])).get(b"retry-after")
    try:
        parsed: Any = _mask(jsonlib.loads(raw)) if raw else None
    except ValueError:
        parsed = raw.decode("latin-1")
    return {"status": start["status"] if start else None, "retry_after": retry,
            "body": parsed, "escaped": escaped}


async def _probe(tmp_path: Path, settings: Settings,
                 probe: Callable[[Any, Store, Any], Awaitable[Any]]) -> tuple[Any, Any]:
    """``probe(app, store, creds)`` with the fast path on, then off; both results."""
    results = []
    for fast in (True, False):
        store = Store.from_url(f"sqlite:///{tmp_path / ('probe-fast' if fast else 'probe-slow')}.db")
        migrate.upgrade(store)
        try:
            app = create_app(store, FakeClock(),
                             with_fast_path(settings, "auto" if fast else "off"),
                             admin_secret=ADMIN_SECRET)
            with store.session() as s:
                _node, creds = nodes_mod.create_node(s, FakeClock().now(), "a", max_capacity=4)
            results.append(await probe(app, store, creds))
        finally:
            store.dispose()
    return results[0], results[1]


async def _claimed(app: Any, store: Store, creds: Any, settings: Settings) -> str:
    """Dispatch a one-feed task and claim it as ``creds``; the allocation id."""
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://parent") as client:
        api = Api(client, app, store, FakeClock(), settings)
        tok = api.token()
        task_id = await api.setup_task(tok, n_feeds=1)
        r = await client.post(P + "/dispatch-task", params={"task_id": task_id},
                              headers=api.bearer(tok))
        assert r.status_code == 200, r.text
        r = await client.post(P + "/claim-task", headers=_plain(creds))
        assert r.status_code == 200 and r.json()["data"], r.text
        return str(r.json()["data"]["allocation_id"])


def _plain(creds: Any) -> dict[str, str]:
    return {"Authorization": f"AK-SK {creds.api_key}:{creds.api_secret}"}


def _status_body(**extra: Any) -> bytes:
    return _body({"allocation_id": "0" * 32, "status": "executing", **extra})


# Every kind of exception an endpoint can raise, answered by the app's handlers (or not).
_RAISED = {
    "AuthError": lambda: errors.AuthError("no"),
    "NotOwner": lambda: errors.NotOwner("no"),
    "NotFound": lambda: errors.NotFound("x", "y"),
    "Conflict": lambda: errors.Conflict("c"),
    "InvalidInput": lambda: errors.InvalidInput("bad", field="f"),
    "StoreError": lambda: errors.StoreError("down"),
    "RateLimited": lambda: errors.RateLimited("slow down", retry_after=7.2),
    "OperationalError": lambda: OperationalError("SELECT 1", {},
                                                         Exception("locked")),
    "HTTPException": lambda: HTTPException(418, "teapot"),
    "ExceptionGroup": lambda: ExceptionGroup("g", [ValueError("v")]),
    # A bug: the catch-all handler answers 500 in the envelope, and FastAPI's
    # ServerErrorMiddleware then re-raises it so the server logs the traceback.
    "RuntimeError (a bug)": lambda: RuntimeError("boom"),
    # A handler that itself fails (RateLimited.retry_after=inf: int(inf) in the 429
    # handler): FastAPI falls back to the catch-all 500 envelope.
    "handler fails": lambda: errors.RateLimited("slow down",
                                                          retry_after=math.inf),
}


@pytest.mark.parametrize("kind", list(_RAISED))
async def test_endpoint_exceptions_answered_like_fastapi(
        tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    def raise_it(*_a: Any, **_k: Any) -> Any:
        raise _RAISED[kind]()

    monkeypatch.setattr(allocations_mod, "set_status", raise_it)

    async def probe(app: Any, store: Store, creds: Any) -> Any:
        return await _asgi(app, "PUT", P + "/task-status", body=_status_body(),
                           headers={**_plain(creds), "Content-Type": "application/json"})

    fast, slow = await _probe(tmp_path, settings, probe)
    assert fast == slow, f"{kind}: fast path {fast} != FastAPI {slow}"


async def test_epoch_beyond_int64_answers_like_fastapi(tmp_path: Path,
                                                      settings: Settings) -> None:
    """``epoch`` has no upper bound in the wire model: 2**70 (beyond SQLite's INTEGER) on all
    three body routes of a real allocation gets the same answer (409) either way."""
    async def probe(app: Any, store: Store, creds: Any) -> Any:
        aid = await _claimed(app, store, creds, settings)
        out = []
        for path, body in (("/task-status", {"status": "executing"}),
                           ("/upload-articles", {"articles": []}),
                           ("/report-completion", {"results": []})):
            out.append(await _asgi(
                app, "PUT" if path == "/task-status" else "POST", P + path,
                body=_body({"allocation_id": aid, "epoch": 2**70, **body}),
                headers={**_plain(creds), "Content-Type": "application/json"}))
        return out

    fast, slow = await _probe(tmp_path, settings, probe)
    assert fast == slow, f"fast path {fast} != FastAPI {slow}"


async def test_claim_query_with_non_ascii_digits_like_fastapi(tmp_path: Path,
                                                              settings: Settings) -> None:
    """``\\d`` in ``_WAIT``/``_MAX`` matches any Unicode digit and float()/int() accept them;
    pydantic does not, so FastAPI answers 422 where the fast path claims work."""
    async def probe(app: Any, store: Store, creds: Any) -> Any:
        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://parent") as client:
            api = Api(client, app, store, FakeClock(), settings)
            task_id = await api.setup_task(api.token(), n_feeds=4)
            await client.post(P + "/dispatch-task", params={"task_id": task_id},
                              headers=api.bearer(api.token()))
            out = []
            for query in ("max=%D9%A2",          # ARABIC-INDIC DIGIT TWO
                          "wait=%EF%BC%90",      # FULLWIDTH DIGIT ZERO
                          "max=%E0%A5%A7"):      # DEVANAGARI DIGIT ONE
                r = await client.post(P + "/claim-task?" + query, headers=_plain(creds))
                out.append((query, r.status_code, _mask(r.json())))
            return out

    fast, slow = await _probe(tmp_path, settings, probe)
    differ = [f"{f[0]}: fast path {f[1]} {f[2]['message']!r} != FastAPI {s[1]} "
              f"{s[2]['message']!r}" for f, s in zip(fast, slow, strict=True) if f != s]
    assert not differ, "\n".join(differ)


async def test_claim_long_poll_ends_on_disconnect_like_fastapi(tmp_path: Path,
                                                               settings: Settings) -> None:
    """No work, wait=5: the client goes away; both stop polling at the next re-check."""
    async def probe(app: Any, store: Store, creds: Any) -> Any:
        async def gone() -> Any:
            return {"type": "http.disconnect"}

        started = time.monotonic()
        answer = await _asgi(app, "POST", P + "/claim-task", query=b"wait=5",
                             headers=_plain(creds), after_body=gone)
        return answer, time.monotonic() - started < 2

    fast, slow = await _probe(tmp_path, settings, probe)
    assert fast == slow
    assert fast[1], "the long poll did not end when the client went away"


async def test_claim_long_poll_cancelled_like_fastapi(tmp_path: Path,
                                                      settings: Settings) -> None:
    """A long poll cancelled by the server (shutdown): nothing sent, the same metrics."""
    async def probe(app: Any, store: Store, creds: Any) -> Any:
        with anyio.move_on_after(0.7):
            await _asgi(app, "POST", P + "/claim-task", query=b"wait=5", headers=_plain(creds))
        return _metrics(app)

    fast, slow = await _probe(tmp_path, settings, probe)
    assert fast == slow


def _metrics(app: Any) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Counters and histogram counts of the app's registry (latency values and the
    process's own metrics left out)."""
    out = []
    for family in app.state.cascade.metrics.registry.collect():
        if family.name.startswith(("process_", "python_")):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_bucket", "_sum", "_created")):
                continue
            out.append((sample.name, tuple(sorted(sample.labels.items())), sample.value))
    return sorted(out)


class _Histogram(otel_metrics.NoOpHistogram):
    def __init__(self, name: str, records: list[dict[str, Any]], **kw: Any) -> None:
        super().__init__(name, **kw)
        self.metric_name = name
        self.records = records

    def record(self, amount: float, attributes: Any = None, context: Any = None) -> None:
        self.records.append({"name": self.metric_name, **dict(attributes or {})})


class _Meter(otel_metrics.NoOpMeter):
    def __init__(self, records: list[dict[str, Any]]) -> None:
        super().__init__("fastapi")
        self.records = records

    def create_histogram(self, name: str, unit: str = "", description: str = "",
                         **kw: Any) -> Any:
        return _Histogram(name, self.records, unit=unit, description=description)


class _MeterProvider(otel_metrics.MeterProvider):
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def get_meter(self, name: str, version: str | None = None, schema_url: str | None = None,
                  attributes: Any = None) -> Any:
        return _Meter(self.records)


async def test_fastapi_native_request_metrics_like_fastapi(tmp_path: Path,
                                                           settings: Settings) -> None:
    """With OpenTelemetry configured, FastAPI records http.server.request.duration with
    ``http.route`` (set while routing). The fast path skips routing: no ``http.route``."""
    async def probe(app: Any, store: Store, creds: Any) -> Any:
        provider = _MeterProvider()
        app._telemetry["meter_provider"] = provider  # as FastAPI(telemetry={...}) would
        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://parent") as client:
            await client.post(P + "/claim-task", headers=_plain(creds))
            await client.put(P + "/task-status", headers=_plain(creds),
                             content=_status_body())
        return provider.records

    fast, slow = await _probe(tmp_path, settings, probe)
    assert fast == slow


async def test_telemetry_answer_is_reused_then_rechecked(tmp_path: Path,
                                                         settings: Settings) -> None:
    """FastAPI asks its providers on every request; CascadeApp asks once per
    ``TELEMETRY_RECHECK`` and sees a provider configured while it serves after that."""
    store = Store.from_url(f"sqlite:///{tmp_path / 'telemetry.db'}")
    migrate.upgrade(store)
    try:
        app = create_app(store, FakeClock(), settings, admin_secret=ADMIN_SECRET)
        with store.session() as s:
            _node, creds = nodes_mod.create_node(s, FakeClock().now(), "a", max_capacity=4)
        asked = 0
        native_enabled = app._native_telemetry.enabled

        def counting() -> bool:
            nonlocal asked
            asked += 1
            return bool(native_enabled())

        app._native_telemetry.enabled = counting
        app.TELEMETRY_RECHECK = 3600.0
        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://parent") as client:
            for _ in range(5):
                r = await client.post(P + "/claim-task", headers=_plain(creds))
                assert r.status_code == 200, r.text
            assert asked == 1
            provider = _MeterProvider()
            app._telemetry["meter_provider"] = provider
            await client.post(P + "/claim-task", headers=_plain(creds))
            assert provider.records == []  # the cached answer: not yet
            app.TELEMETRY_RECHECK = 0.0
            r = await client.post(P + "/claim-task", headers=_plain(creds))
            assert r.status_code == 200, r.text
            assert asked >= 2
            # Recorded by FastAPI, with the route it matched (the fast path stands aside).
            assert [rec.get("http.route") for rec in provider.records] == [P + "/claim-task"]
    finally:
        store.dispose()


def _middleware_chain(app: Any) -> list[type]:
    """The classes of the app's outer ASGI layers, outermost first (each holds the next as
    ``app``)."""
    if app.middleware_stack is None:
        app.middleware_stack = app.build_middleware_stack()
    chain, layer = [], app.middleware_stack
    while layer is not None and len(chain) < 20:
        chain.append(type(layer))
        layer = getattr(layer, "app", None)
    return chain


@pytest.mark.parametrize("mode", ["auto", "off"])
async def test_the_setting_installs_the_fast_path_or_not(tmp_path: Path, settings: Settings,
                                                        mode: str) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'installed.db'}")
    migrate.upgrade(store)
    try:
        app = create_app(store, FakeClock(), with_fast_path(settings, mode),
                         admin_secret=ADMIN_SECRET)
        assert (NodeFastPath in _middleware_chain(app)) == (mode == "auto")
        assert app.fast_path == (mode == "auto")
    finally:
        store.dispose()


async def test_off_uses_none_of_fastapis_internals(tmp_path: Path, settings: Settings,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``parent.http_fast_path: off`` is the fallback for a FastAPI whose internals changed:
    the node routes then need none of what ``web.adapters`` reaches into for the fast path."""
    def broken(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a FastAPI internal was used with the fast path off")

    for name in ("native_telemetry_enabled", "call_without_telemetry", "route_reads_body",
                 "set_matched_route"):
        monkeypatch.setattr(adapters, name, broken)
    store = Store.from_url(f"sqlite:///{tmp_path / 'off.db'}")
    migrate.upgrade(store)
    try:
        app = create_app(store, FakeClock(), with_fast_path(settings, "off"),
                         admin_secret=ADMIN_SECRET)
        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://parent") as client:
            api = Api(client, app, store, FakeClock(), settings)
            creds = api.node("a", capacity=2)
            task_id = await api.setup_task(api.token(), n_feeds=1)
            r = await client.post(P + "/dispatch-task", params={"task_id": task_id},
                                  headers=api.bearer(api.token()))
            assert r.status_code == 200, r.text
            r = await client.post(P + "/claim-task", headers=_plain(creds))
            assert r.status_code == 200 and r.json()["data"], r.text
            pkg = r.json()["data"]
            r = await client.put(P + "/task-status", content=_body(
                {"allocation_id": pkg["allocation_id"], "status": "executing",
                 "epoch": pkg["epoch"]}),
                headers={**_plain(creds), "Content-Type": "application/json"})
            assert r.status_code == 200, r.text
    finally:
        store.dispose()


async def test_dependency_overrides_make_the_fast_path_stand_aside(
        tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``auto``, an app whose dependencies are overridden (tests do) is routed by FastAPI,
    so the override applies to the hot routes too."""
    handled: list[str] = []
    original = APIRoute.handle

    async def counting(self: APIRoute, scope: Any, receive: Any, send: Any) -> None:
        handled.append(self.path)
        await original(self, scope, receive, send)

    monkeypatch.setattr(APIRoute, "handle", counting)
    store = Store.from_url(f"sqlite:///{tmp_path / 'overrides.db'}")
    migrate.upgrade(store)
    try:
        app = create_app(store, FakeClock(), settings, admin_secret=ADMIN_SECRET)
        with store.session() as s:
            _node, creds = nodes_mod.create_node(s, FakeClock().now(), "a", max_capacity=2)
        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://parent") as client:
            await client.post(P + "/claim-task", headers=_plain(creds))
            assert handled == []  # served by the fast path
            app.dependency_overrides[_run] = _run
            await client.post(P + "/claim-task", headers=_plain(creds))
            assert handled == ["/claim-task"]  # the route as declared
    finally:
        store.dispose()
