"""In-process parent app over httpx.ASGITransport, with nodes, an admin token and signing."""

from __future__ import annotations

import dataclasses
import json as jsonlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from cascade_cli import auth
from cascade_cli.auth import NodeCredentials
from cascade_cli.clock import FakeClock
from cascade_cli.config import ParentSection, Settings
from cascade_cli.domain import tokens
from cascade_cli.store import nodes
from cascade_cli.store.engine import Store
from cascade_cli.web import fastpath
from cascade_cli.web.app import create_app

P = "/api/v1/cascade"
WX = "/api/v1/wx/cascade"
ADMIN_SECRET = b"test-admin-secret-" + b"x" * 40


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def with_fast_path(settings: Settings, mode: str) -> Settings:
    """``settings`` with ``parent.http_fast_path`` set to ``mode``."""
    parent = settings.parent.model_copy(update={"http_fast_path": mode})
    return dataclasses.replace(settings, model=settings.model.model_copy(update={"parent": parent}))


@pytest.fixture(params=["auto", "off"], ids=["fast-path", "fastapi"])
def http_fast_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test with ``parent.http_fast_path`` as configured (``auto``) and ``off``, through
    every app it builds: whatever settings a test makes, the node routes must answer the same
    both ways. Use it as ``pytest.mark.usefixtures("http_fast_path")``."""
    mode = str(request.param)
    if mode == "off":
        def parent(self: Settings) -> ParentSection:
            return self.model.parent.model_copy(update={"http_fast_path": "off"})

        async def never(*_a: Any, **_k: Any) -> None:
            raise AssertionError("NodeFastPath served a request with parent.http_fast_path off")

        monkeypatch.setattr(Settings, "parent", property(parent))
        monkeypatch.setattr(fastpath.NodeFastPath, "__call__", never)
    return mode


@dataclass
class Api:
    client: httpx.AsyncClient
    app: Any
    store: Store
    clock: FakeClock
    settings: Settings

    def node(self, name: str = "child-1", capacity: int = 2) -> NodeCredentials:
        with self.store.session() as s:
            _node, creds = nodes.create_node(s, self.clock.now(), name, max_capacity=capacity)
        return creds

    def token(self, ttl: float = 3600, label: str = "test") -> str:
        with self.store.session() as s:
            tok, _row = tokens.issue(s, self.clock.now(), ADMIN_SECRET, ttl=ttl, label=label)
        return tok

    @staticmethod
    def plain(creds: NodeCredentials) -> dict[str, str]:
        return {"Authorization": f"AK-SK {creds.api_key}:{creds.api_secret}"}

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def signed(self, creds: NodeCredentials, method: str, path_q: str, body: bytes = b"",
               *, ts: int | None = None, nonce: str | None = None) -> dict[str, str]:
        ts = int(self.clock.now().timestamp()) if ts is None else ts
        return {"Authorization": auth.sign_request(creds.api_key, creds.api_secret, method,
                                                   path_q, body, ts, nonce)}

    async def admin(self, method: str, path: str, token: str, **kw: Any) -> httpx.Response:
        return await self.client.request(method, P + path, headers=self.bearer(token), **kw)

    async def as_node(self, creds: NodeCredentials, method: str, path: str,
                      json: Any = None, prefix: str = P, **kw: Any) -> httpx.Response:
        headers = dict(self.plain(creds))
        if json is not None:
            kw["content"] = jsonlib.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        return await self.client.request(method, prefix + path, headers=headers, **kw)

    async def setup_task(self, token: str, n_feeds: int = 3, name: str = "t1",
                         prefix: str = "F") -> str:
        ids = []
        for i in range(n_feeds):
            fid = f"{prefix}_{name}_{i}"
            r = await self.admin("POST", "/feeds", token, json={
                "id": fid, "mp_name": f"feed {i}", "url": f"https://example.com/{fid}.xml"})
            assert r.status_code == 200, r.text
            ids.append(fid)
        r = await self.admin("POST", "/message-tasks", token, json={
            "name": name, "mps_id": ids, "cron_exp": "0 9 * * *"})
        assert r.status_code == 200, r.text
        return r.json()["data"]["id"]


def make_settings(tmp_path: Any, **overrides: Any) -> Settings:
    from cascade_cli.config import load_settings

    base = {"data_dir": str(tmp_path / "data")}
    base.update(overrides)
    return load_settings(environ={}, cwd=tmp_path, overrides=base)


@pytest.fixture
async def api(store: Store, clock: FakeClock, settings: Settings) -> AsyncIterator[Api]:
    app = create_app(store, clock, settings, admin_secret=ADMIN_SECRET)
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://parent") as client:
        yield Api(client, app, store, clock, settings)


def envelope_ok(r: httpx.Response) -> Any:
    body = r.json()
    assert r.status_code == 200, r.text
    assert body["code"] == 0, body
    assert set(body) >= {"code", "message", "data"}
    return body["data"]


def envelope_err(r: httpx.Response, status: int, error: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == status and body["data"] is None, body
    assert isinstance(body.get("error"), str) and body["error"], body
    if error is not None:
        assert body["error"] == error, body
    return body
