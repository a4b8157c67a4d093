"""``NodeFastPath`` answers exactly as FastAPI does, and really serves the plain requests.

The same scenario (good requests, and every kind of bad one) runs against two apps on two
fresh databases: the normal app, and one whose fast path is switched off (it stands aside
whenever ``dependency_overrides`` is set). Every answer must be the same, status and body,
once random ids are masked; the database must end up the same.
"""

from __future__ import annotations

import json as jsonlib
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import func, select

from cascade_cli.clock import FakeClock
from cascade_cli.config import Settings
from cascade_cli.parent.app import create_app
from cascade_cli.store import migrate
from cascade_cli.store.engine import Store
from cascade_cli.store.models import Allocation, Article, Event, FeedResult
from tests.parent_http.conftest import ADMIN_SECRET, WX, Api, P

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
               handled: list[str]) -> tuple[list[Any], Any]:
    store = Store.from_url(f"sqlite:///{tmp_path / ('fast' if fast else 'slow')}.db")
    migrate.upgrade(store)
    app = create_app(store, FakeClock(), settings, admin_secret=ADMIN_SECRET)
    if not fast:
        app.dependency_overrides[_run] = _run  # any override: the fast path stands aside
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1234))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://parent") as client:
            api = Api(client, app, store, FakeClock(), settings)
            handled.clear()
            answers = await _scenario(api)
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
    slow, slow_state = await _run(tmp_path, settings, fast=False, handled=handled)
    through_fastapi_when_off = list(handled)
    fast, fast_state = await _run(tmp_path, settings, fast=True, handled=handled)
    through_fastapi_when_on = list(handled)

    assert len(fast) == len(slow)
    for f, s in zip(fast, slow, strict=True):
        assert f == s, f"{f[0]}: fast path {f[1:]} != FastAPI {s[1:]}"
    assert fast_state == slow_state
    assert {code for _, code, _, _ in fast} >= {200, 400, 401, 403, 404, 405, 409, 413, 422}

    # The plain hot requests never reached FastAPI's routing with the fast path on.
    hot = ("/claim-task", "/task-status", "/upload-articles", "/report-completion")
    off = sum(p.endswith(hot) for p in through_fastapi_when_off)
    on = sum(p.endswith(hot) for p in through_fastapi_when_on)
    served_fast = off - on
    assert served_fast >= 12, (off, on)
