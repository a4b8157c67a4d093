"""``child.transport: auto`` (Cascade's own HTTP/1.1 transport) gives run-child's client of the
parent exactly what ``httpx`` (httpx's own transport) gives.

The same scenario runs through ``AsyncParentClient`` with each transport against a real parent
(``create_app`` under uvicorn on a socket, a fresh database each time): heartbeat, claims,
task-status, uploads small and large, completion, and the refusals a child meets (401, 403,
404, 409, 429, 500, 503, a read timeout). Once with the parent's ordinary answers
(Content-Length) and once with every answer chunked. Each step's parsed result, or the error
it raised (class, status, code, message, hint, Retry-After), must be the same both ways.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from cascade_cli import errors
from cascade_cli.child.transport import FeedTransport, transport_for_parent
from cascade_cli.client import AsyncParentClient
from cascade_cli.clock import SystemClock
from cascade_cli.config import Settings
from cascade_cli.domain import tokens
from cascade_cli.store import allocations as allocations_mod
from cascade_cli.store import migrate, nodes
from cascade_cli.store.engine import Store
from cascade_cli.web.app import create_app
from tests.child.servers import UvicornThread
from tests.parent_http.conftest import ADMIN_SECRET, P, make_settings

pytestmark = pytest.mark.slow

_HEX = re.compile(r"[0-9a-f]{32}")
_KEY = re.compile(r"C[NS][A-Za-z0-9_-]{20,}")
_ADDRESS = re.compile(r"127\.0\.0\.1:\d+|F_parity_\d")  # which feeds a claim gets varies
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z?")


def _mask(value: Any) -> Any:
    """Ids, credentials and times differ between two fresh parents; nothing else may."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, str):
        value = _ADDRESS.sub("<parent>", value)
        return _TIME.sub("<time>", _KEY.sub("<key>", _HEX.sub("<id>", value)))
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    if isinstance(value, dict):
        return {k: ("<when>" if k.endswith(("_at", "time", "timestamp")) else _mask(v))
                for k, v in value.items()}
    return value


def _outcome(exc: BaseException) -> dict[str, Any]:
    return {"error": type(exc).__name__, "message": _mask(str(exc)),
            **{name: _mask(getattr(exc, name)) for name in
               ("status", "code", "error_code", "reason", "hint", "retry_after")
               if getattr(exc, name, None) is not None}}


class Chunked:
    """ASGI wrapper: the parent's answers without Content-Length, so uvicorn chunks them."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def chunked(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [(k, v) for k, v in message["headers"]
                                                   if k.lower() != b"content-length"]}
            await send(message)

        await self.app(scope, receive, chunked if scope["type"] == "http" else send)


@dataclasses.dataclass
class Parent:
    url: str
    store: Store
    settings: Settings
    creds: Any  # NodeCredentials
    disabled: Any  # of a disabled node
    admin: str


@contextmanager
def real_parent(tmp_path: Path, name: str, chunked: bool) -> Iterator[Parent]:
    settings = make_settings(tmp_path / name, **{"parent.auth.failed_attempts_limit": 3})
    store = Store.from_url(f"sqlite:///{tmp_path / name}.db")
    migrate.upgrade(store)
    clock = SystemClock()
    app = create_app(store, clock, settings, admin_secret=ADMIN_SECRET)
    with store.session() as s:
        _node, creds = nodes.create_node(s, clock.now(), "child-1", max_capacity=4)
        _node, disabled = nodes.create_node(s, clock.now(), "disabled-1", max_capacity=1)
        nodes.set_enabled(s, clock.now(), "disabled-1", False)
        admin, _row = tokens.issue(s, clock.now(), ADMIN_SECRET, ttl=3600, label="parity")
    try:
        with UvicornThread(Chunked(app) if chunked else app) as server:
            yield Parent(server.url, store, settings, creds, disabled, admin)
    finally:
        store.dispose()


def _admin(parent: Parent, method: str, path: str, **kw: Any) -> Any:
    r = httpx.request(method, parent.url + P + path,
                      headers={"Authorization": f"Bearer {parent.admin}"}, timeout=10, **kw)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def _scenario(parent: Parent, kind: str) -> list[tuple[str, Any]]:
    steps: list[tuple[str, Any]] = []
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    transport = transport_for_parent(kind)  # type: ignore[arg-type]
    c = parent.creds
    clients: list[AsyncParentClient] = []

    def client(key: str = c.api_key, secret: str = c.api_secret, **kw: Any) -> AsyncParentClient:
        options: dict[str, Any] = {"timeout": 5.0, "retries": 1, "sleep": fake_sleep, **kw}
        clients.append(AsyncParentClient(parent.url, key, secret, transport=transport,
                                         **options))
        return clients[-1]

    async def step(label: str, call: Any) -> Any:
        try:
            result = await call
        except Exception as exc:  # noqa: BLE001 - the error is the result
            steps.append((label, _outcome(exc)))
            return None
        masked = _mask(result)
        if isinstance(masked, list):  # which allocation a claim gets first is not fixed
            masked.sort(key=repr)
        steps.append((label, masked))
        return result

    main = client()
    await step("heartbeat", main.heartbeat())
    await step("claim, no work", main.claim(wait=0))
    feeds = [f"F_parity_{i}" for i in range(3)]
    for fid in feeds:
        _admin(parent, "POST", "/feeds", json={"id": fid, "mp_name": fid,
                                               "url": f"https://example.com/{fid}.xml"})
    task = _admin(parent, "POST", "/message-tasks", json={
        "name": "parity", "mps_id": feeds, "cron_exp": "0 9 * * *"})["id"]
    _admin(parent, "POST", "/dispatch-task", params={"task_id": task})
    claimed = await step("claim max=2", main.claim(wait=0, max=2))
    pkg = claimed[0] if isinstance(claimed, list) else claimed
    pkg = pkg.model_dump() if isinstance(pkg, BaseModel) else pkg
    aid, epoch = pkg["allocation_id"], pkg["epoch"]
    feed = pkg["feeds"][0]["id"]
    await step("executing", main.set_status(aid, "executing", epoch=epoch))
    small = [{"feed_id": feed, "title": f"标题 {i}", "url": f"https://e/{feed}/{i}",
              "publish_time": 1700000000 + i} for i in range(5)]
    await step("upload", main.upload_articles(aid, small, epoch=epoch))
    await step("upload again", main.upload_articles(aid, small, epoch=epoch))
    big = [json.dumps({"feed_id": feed, "title": f"big {i}", "url": f"https://e/big/{i}",
                       "content": "x" * 2000}).encode() for i in range(200)]
    await step("upload ~0.4 MB", main.upload_articles_json(aid, big, epoch=epoch))
    await step("stale epoch (409)", main.set_status(aid, "executing", epoch=epoch - 1))
    await step("unknown allocation", main.set_status("0" * 32, "executing", epoch=1))
    await step("complete", main.report_completion(
        aid, task, [{"feed_id": f["id"], "status": "success", "article_count": 5}
                    for f in pkg["feeds"]], 205, epoch=epoch))
    await step("complete again", main.report_completion(aid, task, [], 0, epoch=epoch))

    # 500 and 503 from the parent, then a read timeout (each sent twice: retries=1)
    def bug(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("boom")

    def down(*_a: Any, **_k: Any) -> Any:
        raise errors.StoreError("database down")

    def slow(*_a: Any, **_k: Any) -> Any:
        time.sleep(1.0)
        raise errors.StoreError("too late")

    for label, fake, options in (("500", bug, {}), ("503", down, {}),
                                 ("read timeout", slow, {"timeout": 0.3})):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(allocations_mod, "set_status", fake)
            await step(label, client(**options).set_status(aid, "executing", epoch=epoch))
    await asyncio.sleep(1.2)  # the parent is done with the timed-out requests

    # refusals: a disabled node (403), a wrong secret (401), then the auth throttle (429)
    await step("disabled node", client(key=parent.disabled.api_key,
                                       secret=parent.disabled.api_secret).heartbeat())
    wrong = client(secret="CS" + "w" * 43, retries=0)
    for i in range(4):
        await step(f"wrong secret {i}", wrong.heartbeat())
    await step("heartbeat after", main.heartbeat(running=[aid]))
    # Retries: backoff delays are jittered; a Retry-After is taken as sent.
    steps.append(("client retries", [round(d) if d >= 10 else "backoff" for d in sleeps]))
    if isinstance(transport, FeedTransport):
        # Every request went over Cascade's own connections, kept alive between them.
        assert sum(len(v) for v in transport._idle.values()) >= 1
    for each in clients:
        await each.aclose()
    return steps


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_same_results_through_both_transports(tmp_path: Path, chunked: bool,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    results: dict[str, list[tuple[str, Any]]] = {}
    for kind in ("auto", "httpx"):
        with real_parent(tmp_path, kind, chunked) as parent:
            fallback_calls: list[str] = []
            original = httpx.AsyncHTTPTransport.handle_async_request

            async def counting(self: Any, request: httpx.Request) -> httpx.Response:
                fallback_calls.append(request.url.path)
                return await original(self, request)

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", counting)
                results[kind] = asyncio.run(_scenario(parent, kind))
            if kind == "auto":
                assert fallback_calls == []  # nothing went to httpx's transport
            else:
                assert len(fallback_calls) >= 20  # httpx's own transport did the work

    auto, plain = results["auto"], results["httpx"]
    assert [label for label, _ in auto] == [label for label, _ in plain]
    differ = [f"{label}:\n  auto:  {a}\n  httpx: {b}"
              for (label, a), (_, b) in zip(auto, plain, strict=True) if a != b]
    assert not differ, "\n".join(differ)
    seen = {label: value for label, value in auto}
    # The scenario reached what it meant to reach (else equal could mean equally broken).
    assert isinstance(seen["claim max=2"], list) and seen["claim max=2"], seen["claim max=2"]
    errors_seen = {label: (value["error"], value.get("status")) for label, value in auto
                   if isinstance(value, dict) and "error" in value}
    assert errors_seen == {
        "stale epoch (409)": ("LeaseLost", None),
        "unknown allocation": ("WrongEndpoint", None),  # 404
        "500": ("ParentServerError", 500),
        "503": ("ParentServerError", 503),
        "read timeout": ("ParentUnreachable", None),
        "disabled node": ("NodeDisabled", None),  # 403
        "wrong secret 0": ("BadCredentials", None),  # 401
        "wrong secret 1": ("BadCredentials", None),
        "wrong secret 2": ("BadCredentials", None),
        "wrong secret 3": ("ParentRejected", 429),  # the auth-failure throttle (limit 3)
        "heartbeat after": ("ParentRejected", 429),  # ... for that key from this address
    }, errors_seen
