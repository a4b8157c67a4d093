"""NUL and other control characters on every database (issue 16, point 1).

One rule on SQLite, PostgreSQL and MariaDB (docs/protocol.md, "Control characters"):
free text (article title/description/content/author, error messages, descriptions, names)
has NUL and the C0 control characters other than TAB, LF and CR removed; identifiers (ids,
names of nodes, URLs, hostnames, versions, etags, path and query parameters) holding any
control character are refused with 422. Never a 500 - PostgreSQL cannot store U+0000 at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from cascade_cli.clock import SystemClock
from cascade_cli.config import load_settings
from cascade_cli.domain import tokens
from cascade_cli.store.engine import Store
from cascade_cli.store.models import Article, Event, Feed, FeedResult, MessageTask, Node
from tests.hardening.helpers import setup_parent
from tests.parent_http.conftest import ADMIN_SECRET, Api, envelope_err, envelope_ok
from tests.parent_http.procs import ParentProc, write_config

pytestmark = pytest.mark.anyio


@pytest.fixture
async def dbapi(any_store, clock, settings):
    from cascade_cli.web.app import create_app

    app = create_app(any_store, clock, settings, admin_secret=ADMIN_SECRET)
    transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://parent") as client:
        yield Api(client, app, any_store, clock, settings)


async def _claimed(api: Api):
    creds = api.node("nul-node", capacity=2)
    envelope_ok(await api.as_node(creds, "POST", "/heartbeat", json={"running": []}))
    tok = api.token()
    task_id = await api.setup_task(tok, n_feeds=1)
    envelope_ok(await api.admin("POST", "/dispatch-task", tok, params={"task_id": task_id}))
    pkg = envelope_ok(await api.as_node(creds, "POST", "/claim-task"))
    return creds, tok, task_id, pkg


@pytest.mark.usefixtures("http_fast_path")
async def test_node_routes(dbapi):
    await node_route_cases(dbapi)


async def test_admin_routes_and_parameters(dbapi):
    await admin_route_cases(dbapi)


@pytest.mark.slow
@pytest.mark.postgres
async def test_real_serve_parent_on_postgres(tmp_path: Path, pg_url: str) -> None:
    """The same cases over real HTTP to a real ``serve-parent`` process on PostgreSQL (the
    database that cannot store U+0000): the same statuses, and no 5xx at all."""
    config = write_config(tmp_path, pg_url, scheduler={"enabled": False},
                          notify={"enabled": False})
    setup_parent(config, children=())  # schema and admin secret, in-process: faster
    settings = load_settings(config, environ={})
    secret = tokens.ensure_secret(settings.admin_token_secret_file)
    server_errors: list[str] = []

    async def record(r: httpx.Response) -> None:
        if r.status_code >= 500:
            await r.aread()
            server_errors.append(f"{r.request.method} {r.request.url}: {r.status_code} {r.text}")

    store = Store.from_url(pg_url)
    try:
        with ParentProc(config) as parent:
            async with httpx.AsyncClient(base_url=parent.url, timeout=30,
                                         event_hooks={"response": [record]}) as client:
                api = ProcessApi(client, None, store, SystemClock(), settings, secret)  # type: ignore[arg-type]
                await node_route_cases(api)
                await admin_route_cases(api)
            assert not server_errors, server_errors
            assert not any("Traceback" in line for line in parent.stderr_lines), \
                "".join(parent.stderr_lines)
    finally:
        store.dispose()


@dataclass
class ProcessApi(Api):
    """``Api`` against a real process: admin tokens signed with that parent's secret."""

    secret: bytes = b""

    def token(self, ttl: float = 3600, label: str = "test") -> str:
        with self.store.session() as s:
            tok, _row = tokens.issue(s, self.clock.now(), self.secret, ttl=ttl, label=label)
        return tok


# --- the cases, run in-process on every database and over real HTTP on PostgreSQL ----------


async def node_route_cases(api: Api) -> None:
    creds, tok, task_id, pkg = await _claimed(api)
    aid, epoch, feed = pkg["allocation_id"], pkg["epoch"], pkg["feeds"][0]["id"]

    for field in ("hostname", "version", "callback_url"):
        r = await api.as_node(creds, "POST", "/heartbeat", json={field: "a\x00b"})
        envelope_err(r, 422)
        assert field in r.json()["message"], r.text
    envelope_err(await api.as_node(creds, "POST", "/heartbeat",
                                   json={"running": ["x\x00"]}), 422)
    envelope_err(await api.as_node(creds, "PUT", "/task-status", json={
        "allocation_id": aid + "\x00", "status": "executing", "epoch": epoch}), 422)

    # Text is cleaned: the request succeeds and the stored text has no NUL.
    envelope_ok(await api.as_node(creds, "PUT", "/task-status", json={
        "allocation_id": aid, "status": "executing", "epoch": epoch,
        "error_message": "bad\x00message"}))
    arts = [{"feed_id": feed, "title": "bad\x00title\x07", "url": "https://e/1",
             "description": "d\x00\tx\n", "content": "c\x00\x1b[31m", "author": "a\x00u",
             "guid": "g-1"}]
    d = envelope_ok(await api.as_node(creds, "POST", "/upload-articles", json={
        "allocation_id": aid, "epoch": epoch, "articles": arts}))
    assert d == {"received": 1, "new_count": 1}
    # A NUL in an identifier is refused, not stored and not a 500.
    bad_guid = [{**arts[0], "guid": "g\x00"}]
    envelope_err(await api.as_node(creds, "POST", "/upload-articles", json={
        "allocation_id": aid, "epoch": epoch, "articles": bad_guid}), 422)
    envelope_err(await api.as_node(creds, "POST", "/upload-articles", json={
        "allocation_id": aid, "epoch": epoch, "feed_id": "f\x00", "articles": []}), 422)
    envelope_err(await api.as_node(creds, "POST", "/report-completion", json={
        "allocation_id": aid, "epoch": epoch,
        "results": [{"feed_id": feed, "status": "failed", "etag": "e\x00"}]}), 422)
    done = envelope_ok(await api.as_node(creds, "POST", "/report-completion", json={
        "allocation_id": aid, "epoch": epoch, "task_id": task_id,
        "results": [{"feed_id": feed, "status": "failed", "error": "boom\x00!"}]}))
    assert done["status"] in ("completed", "failed"), done
    envelope_ok(await api.as_node(creds, "POST", "/report-result", json={
        "task_id": task_id, "results": [{"x\x00": "y\x00", "n": ["z\x00"]}]}))
    envelope_err(await api.as_node(creds, "POST", "/report-result", json={
        "task_id": "t\x00", "results": []}), 422)

    with api.store.session() as s:
        art = s.scalars(select(Article)).one()
        assert (art.title, art.description, art.content, art.author) == \
            ("badtitle", "d\tx\n", "c[31m", "au")
        errors = [r.error for r in s.scalars(select(FeedResult))]
        assert errors == ["boom!"]
        assert not any("\x00" in str(e.detail) for e in s.scalars(select(Event)))


async def admin_route_cases(api: Api) -> None:
    tok = api.token()
    for path in ("/nodes/a%00b", "/feeds/a%00b", "/message-tasks/a%00b"):
        r = await api.admin("GET" if path.startswith("/nodes") else "DELETE", path, tok)
        envelope_err(r, 422)
        assert "control character" in r.json()["message"], r.text
    for params in ({"task_id": "\x00"}, {"node_id": "a\x01"}, {"status": "x\x00"}):
        envelope_err(await api.admin("GET", "/allocations", tok, params=params), 422)
    envelope_err(await api.admin("POST", "/dispatch-task", tok,
                                 params={"task_id": "t\x00"}), 422)

    envelope_err(await api.admin("POST", "/nodes", tok, json={"name": "n\x00"}), 422)
    envelope_ok(await api.admin("POST", "/nodes", tok, json={"name": "n1",
                                                             "description": "d\x00e"}))
    envelope_err(await api.admin("POST", "/feeds", tok, json={
        "id": "F1", "url": "https://e/\x00"}), 422)
    envelope_ok(await api.admin("POST", "/feeds", tok, json={
        "id": "F1", "url": "https://e/f.xml", "mp_name": "na\x00me", "mp_intro": "i\x00"}))
    envelope_ok(await api.admin("PUT", "/feeds/F1", tok, json={"mp_name": "n\x00ew"}))
    envelope_err(await api.admin("PUT", "/feeds/F1", tok, json={"faker_id": "x\x00"}), 422)
    envelope_err(await api.admin("POST", "/message-tasks", tok, json={
        "name": "t", "mps_id": ["F1\x00"]}), 422)
    envelope_err(await api.admin("POST", "/message-tasks", tok, json={
        "name": "t", "mps_id": ["F1"], "cron_exp": "0 9 * * *\x00"}), 422)
    envelope_ok(await api.admin("POST", "/message-tasks", tok, json={
        "name": "ta\x00sk", "mps_id": ["F1"], "message_template": "{{ now }}\x00"}))
    with api.store.session() as s:
        assert s.scalars(select(Node.description).where(Node.name == "n1")).one() == "de"
        feed = s.get(Feed, "F1")
        assert (feed.mp_name, feed.mp_intro) == ("new", "i")
        task = s.scalars(select(MessageTask).where(MessageTask.name == "task")).one()
        assert (task.name, task.message_template) == ("task", "{{ now }}")
