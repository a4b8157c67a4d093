"""Issue 18: an unmodified we-mp-rss child (re-implemented in ``legacy_child``) works against
Cascade's parent on ``/api/v1/wx/cascade`` with plain AK-SK, once its node is legacy."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from cascade_cli import auth
from cascade_cli.clock import FakeClock
from cascade_cli.config import Settings
from cascade_cli.domain.reaper import reap_expired
from cascade_cli.store import nodes
from cascade_cli.store.models import Allocation, Article, Node
from cascade_cli.web.app import create_app
from tests.conftest import migrated_store
from tests.dbservers import fresh_database
from tests.migration.legacy_child import LegacyChild
from tests.parent_http.conftest import ADMIN_SECRET, Api, with_fast_path

pytestmark = pytest.mark.anyio

# Shaped as the original makes them: "CN"/"CS" + 32 base64url characters, '-' and '_' too.
LEGACY_KEY = "CNa-b_c" + "Q" * 27
LEGACY_SECRET = "CSz_y-x" + "7" * 27
FEEDS = [f"MP_WXS_{3000 + i}" for i in range(5)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite-fastpath", "sqlite-fastapi"])
async def api(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock,
              settings: Settings) -> AsyncIterator[Api]:
    """The app as served, and with ``parent.http_fast_path: off``: legacy behaviour must be the
    same on both paths."""
    async for a in _app(request.param, tmp_path, clock, settings):
        yield a


@pytest.fixture(params=["sqlite-fastpath", "sqlite-fastapi",
                        pytest.param("postgres-fastpath", marks=pytest.mark.postgres),
                        pytest.param("mysql-fastpath", marks=pytest.mark.mysql)])
async def any_api(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock,
                  settings: Settings) -> AsyncIterator[Api]:
    """As ``api``, and on PostgreSQL and MariaDB (their claims and completions differ)."""
    async for a in _app(request.param, tmp_path, clock, settings):
        yield a


async def _app(param: str, tmp_path: Path, clock: FakeClock,
               settings: Settings) -> AsyncIterator[Api]:
    db, mode = param.split("-")
    place: AbstractContextManager[str] = (
        nullcontext(f"sqlite:///{tmp_path / 'cascade.db'}") if db == "sqlite"
        else fresh_database(db))
    with place as url, migrated_store(url) as store:
        app = create_app(store, clock, with_fast_path(settings, "off" if mode == "fastapi"
                                                      else "auto"), admin_secret=ADMIN_SECRET)
        transport = httpx.ASGITransport(app=app, client=("10.0.0.9", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://parent") as client:
            yield Api(client, app, store, clock, settings)


async def setup_parent(api: Api, *, legacy: bool = True) -> tuple[str, str]:
    """Feeds, a task with a webhook, and the imported node; (admin token, task id)."""
    token = api.token()
    for i, fid in enumerate(FEEDS):
        r = await api.admin("POST", "/feeds", token, json={
            "id": fid, "mp_name": f"公众号{i}", "faker_id": f"Mz{i}",
            "url": f"http://we-mp-rss:8001/feed/{fid}.rss"})
        assert r.status_code == 200, r.text
    r = await api.admin("POST", "/message-tasks", token, json={
        "name": "每日推送", "mps_id": json.dumps([{"id": f} for f in FEEDS]),
        "cron_exp": "0 9 * * *", "web_hook_url": "https://hooks.example.com/x",
        "message_template": "### {{feed.mp_name}}", "headers": {"X-Token": "t0k"},
        "cookies": "sid=1; lang=zh"})
    assert r.status_code == 200, r.text
    task_id = r.json()["data"]["id"]
    with api.store.session() as s:
        node, created = nodes.import_legacy_node(
            s, api.clock.now(), name="wemp-child-1", api_key=LEGACY_KEY,
            sha256_hex=hashlib.sha256(LEGACY_SECRET.encode()).hexdigest())
        assert created
        if not legacy:
            node.legacy = False
    return token, task_id


async def dispatch(api: Api, token: str, task_id: str) -> int:
    r = await api.admin("POST", f"/dispatch-task?task_id={task_id}", token)
    assert r.status_code == 200, r.text
    return int(r.json()["data"]["allocations_created"])


def child_for(api: Api) -> LegacyChild:
    return LegacyChild(api.client, LEGACY_KEY, LEGACY_SECRET,
                       callback_url="http://child:8002/api/v1/wx/cascade/notify")


def assert_all_ok(child: LegacyChild) -> None:
    bad = [(r.request.method, r.request.url.path, r.status_code, r.text)
           for r in child.responses if r.status_code != 200 or r.json().get("code") != 0]
    assert bad == [] and child.errors == []


async def test_original_child_sequence_completes_every_job(any_api: Api) -> None:
    api = any_api
    token, task_id = await setup_parent(api)
    child = child_for(api)
    # the original's heartbeat: no body (callback_url not configured), then with one
    child.callback_url = ""
    hb = await child.send_heartbeat()
    assert hb["data"]["status"] == "alive"
    child.callback_url = "http://child:8002/api/v1/wx/cascade/notify"
    await child.send_heartbeat()
    assert await child.sync_feeds() == len(FEEDS)
    assert await child.sync_message_tasks() == 1
    task = child.local_tasks[task_id]
    assert isinstance(task["mps_id"], str) and task["feeds"] == FEEDS
    assert task["web_hook_url"] == "https://hooks.example.com/x"
    assert json.loads(task["headers"]) == {"X-Token": "t0k"} and task["cookies"] == "sid=1; lang=zh"

    created = await dispatch(api, token, task_id)
    assert created >= 2
    # The task worker (path A) and the sync service (path B) compete, as on a real child.
    rounds = 0
    while True:
        did_a = await child.worker_once()
        did_b = await child.claim_and_execute_task()
        await child.send_heartbeat()
        rounds += 1
        if not did_a and not did_b:
            break
    assert rounds >= 2
    # a legacy report-result is recorded too
    await child.report_task_result(task_id, [{"feed_id": FEEDS[0], "success": True}])
    # and the old pending-tasks claim answers "no work" in the original's shape
    assert await child.get_pending_tasks() is None
    assert_all_ok(child)

    with api.store.session() as s:
        statuses = s.execute(select(Allocation.status, func.count())
                             .group_by(Allocation.status)).all()
        assert dict(statuses) == {"completed": created}
        stored = set(s.execute(select(Article.feed_id, Article.title)).all())
    # path A uploaded what it fetched; path B (the original's sync service) never uploads,
    # it sends the webhook itself
    uploaded = [(a["mp_id"], a["title"]) for a in child.uploaded]
    assert uploaded and len(uploaded) == len(set(uploaded)) and stored == set(uploaded)
    assert all(w["url"] == "https://hooks.example.com/x" for w in child.webhooks_sent)
    assert len(child.uploaded) + 3 * sum(w["articles"] > 0 for w in child.webhooks_sent) \
        == 3 * len(FEEDS)

    # The same articles fetched again by a second, fresh child: stored once.
    again = LegacyChild(api.client, LEGACY_KEY, LEGACY_SECRET)
    api.clock.advance(60)
    r = await api.admin("POST", f"/dispatch-task?task_id={task_id}&force=true", token)
    assert r.status_code == 200, r.text
    while await again.worker_once():
        pass
    assert_all_ok(again)
    with api.store.session() as s:
        assert s.scalar(select(func.count()).select_from(Article)) == 3 * len(FEEDS)
        assert s.scalar(select(func.count()).select_from(Allocation)
                        .where(Allocation.status != "completed")) == 0


async def test_package_carries_webhook_fields_for_legacy_nodes_only(api: Api) -> None:
    token, task_id = await setup_parent(api, legacy=False)
    child = child_for(api)
    await dispatch(api, token, task_id)
    r = await api.client.post("/api/v1/wx/cascade/claim-task", headers=child._headers())
    pkg = r.json()["data"]
    for key in ("message_template", "web_hook_url", "headers", "cookies"):
        assert key not in pkg
    r = await api.client.get("/api/v1/wx/cascade/message-tasks", headers=child._headers())
    assert "web_hook_url" not in r.json()["data"][0]
    assert isinstance(r.json()["data"][0]["mps_id"], list)
    # the unmodified worker fails on the missing key and reports it failed, as issue 18 says
    await child.execute_parent_task(pkg)
    assert any("message_template" in e for e in child.errors)
    # 'completed' through task-status is the original's shape: legacy nodes only
    await dispatch_force(api, token, task_id)
    pkg = await child.claim_task()
    assert pkg is not None
    r = await api.client.put("/api/v1/wx/cascade/task-status", headers=child._headers(),
                             json={"allocation_id": pkg["allocation_id"],
                                   "status": "completed"})
    assert r.status_code == 422 and "report-completion" in r.json()["message"]

    with api.store.session() as s:
        nodes.set_legacy(s, api.clock.now(), "wemp-child-1", True)
    r = await api.client.put("/api/v1/wx/cascade/task-status", headers=child._headers(),
                             json={"allocation_id": pkg["allocation_id"],
                                   "status": "completed", "error_message": None,
                                   "timestamp": "2026-12-06T20:00:00.123456"})
    assert r.status_code == 200 and r.json()["data"]["status"] == "completed", r.text
    await dispatch_force(api, token, task_id)
    pkg = await child.claim_task()
    assert pkg is not None, "second allocation"
    assert pkg["web_hook_url"] == "https://hooks.example.com/x"
    assert json.loads(pkg["headers"]) == {"X-Token": "t0k"}
    assert pkg["cookies"] == "sid=1; lang=zh" and pkg["message_template"]


async def dispatch_force(api: Api, token: str, task_id: str) -> None:
    api.clock.advance(60)
    r = await api.admin("POST", f"/dispatch-task?task_id={task_id}&force=true", token)
    assert r.status_code == 200, r.text


async def test_legacy_heartbeat_renews_leases_through_a_long_scrape(api: Api) -> None:
    token, task_id = await setup_parent(api)
    child = child_for(api)
    await dispatch(api, token, task_id)
    ttl = api.settings.parent.lease_ttl
    pkg = await child.claim_task()
    assert pkg is not None

    async def long_scrape() -> None:
        # three lease lengths pass; the original heartbeats (no allocation ids) go on
        for _ in range(9):
            api.clock.advance(ttl / 3)
            await child.send_heartbeat()
            with api.store.session() as s:
                assert reap_expired(s, api.clock.now(), api.settings)["requeued"] == 0

    await child.execute_parent_task(pkg, between=long_scrape)
    assert_all_ok(child)
    with api.store.session() as s:
        alloc = s.get(Allocation, pkg["allocation_id"])
        assert alloc is not None and alloc.status == "completed"
        assert alloc.article_count == 3 * len(pkg["feeds"])


async def test_wrong_secret_and_unknown_key_are_refused_alike(api: Api) -> None:
    await setup_parent(api)
    bad = LegacyChild(api.client, LEGACY_KEY, LEGACY_SECRET + "x")
    with pytest.raises(httpx.HTTPStatusError):
        await bad.send_heartbeat()
    unknown = LegacyChild(api.client, "CN" + "-" * 32, LEGACY_SECRET)
    with pytest.raises(httpx.HTTPStatusError):
        await unknown.send_heartbeat()
    assert [r.json()["error"] for r in bad.responses + unknown.responses] == [
        "invalid_credentials"] * 2
    with api.store.session() as s:
        node = s.scalar(select(Node).where(Node.api_key == LEGACY_KEY))
        assert node is not None and node.secret_hash.startswith("sha256$")
        view = nodes.node_dict(node, api.clock.now(), 180)
        assert view["legacy"] and view["plain_legacy_secret"]
        assert "sha256" not in json.dumps(view)


async def test_original_admin_page_calls(api: Api) -> None:
    token = api.token()
    r = await api.client.post("/api/v1/wx/cascade/nodes", headers=api.bearer(token), json={
        "node_type": 1, "name": "sh-child", "description": "上海", "api_url": "http://x:8002"})
    data = r.json()["data"]
    assert r.status_code == 200 and data["node_id"] == data["id"] and data["api_secret"]
    r = await api.client.post("/api/v1/wx/cascade/nodes", headers=api.bearer(token), json={
        "node_type": 0, "name": "parent"})
    assert r.status_code == 422 and "no parent node records" in r.json()["message"]
    r = await api.client.post(f"/api/v1/wx/cascade/nodes/{data['id']}/test-connection",
                              headers=api.bearer(token))
    body = r.json()
    assert r.status_code == 404 and body["error"] == "not_supported"
    assert "cascade doctor" in body["message"] and "GET /nodes/" in body["message"]


async def test_legacy_heartbeat_stops_renewing_a_dropped_allocation(api: Api) -> None:
    """we-mp-rss's sync service can drop a claimed allocation without a word: its heartbeats
    keep it only for parent.legacy_max_hold, then the lease runs out and the work moves on."""
    token, task_id = await setup_parent(api)
    child = child_for(api)
    await dispatch(api, token, task_id)
    pkg = await child.claim_task()  # ... and never heard of again
    assert pkg is not None
    ttl, hold = api.settings.parent.lease_ttl, api.settings.parent.legacy_max_hold
    claimed = api.clock.now()
    requeued = 0
    for _ in range(int((hold + 2 * ttl) // (ttl / 3)) + 1):
        api.clock.advance(ttl / 3)
        await child.send_heartbeat()
        with api.store.session() as s:
            requeued += reap_expired(s, api.clock.now(), api.settings)["requeued"]
        if requeued:
            break
    assert requeued == 1
    held = (api.clock.now() - claimed).total_seconds()
    assert hold < held <= hold + ttl + ttl / 3  # kept while in the hold, not a lease longer
    with api.store.session() as s:
        alloc = s.get(Allocation, pkg["allocation_id"])
        assert alloc is not None and alloc.status == "pending"
    assert_all_ok(child)


def test_legacy_hash_checks() -> None:
    stored = auth.legacy_hash(hashlib.sha256(LEGACY_SECRET.encode()).hexdigest().upper())
    assert stored.startswith("sha256$") and auth.is_legacy_hash(stored)
    assert auth.verify_secret(LEGACY_SECRET, stored)
    assert not auth.verify_secret(LEGACY_SECRET + "x", stored)
    assert not auth.verify_secret(hashlib.sha256(LEGACY_SECRET.encode()).hexdigest(), stored)
    with pytest.raises(ValueError):
        auth.legacy_hash("not-a-digest")
    assert auth.API_KEY_RE.match(LEGACY_KEY) and not auth.API_KEY_RE.match("CN:x")
