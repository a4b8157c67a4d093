"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

A real ``serve-parent`` process under a sub-path (``parent.base_path``), two real ``run-child``
processes fetching the bundled demo feeds from a local feed server: log in with an admin token,
see both children online, dispatch a task from the tasks page, watch its allocations complete
on the run page without reloading it, disable a node, rotate one (the secret shown once), switch
to Chinese, and take a screenshot of each view (into tmp_path; with CASCADE_DOCS_SCREENSHOTS=1
also into docs/img/ for docs/dashboard.md), and open /docs (Swagger UI from the parent,
Authorize). Every request the browser made went to the parent: no CDN.

Chromium comes from .ci/run (apt-get install chromium). Without it, or without the playwright
package, the test skips with the reason, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cascade_cli.clock import SystemClock
from cascade_cli.demo.server import FeedServer, manifest
from cascade_cli.domain import tokens
from cascade_cli.protocol import FeedIn, MessageTaskIn
from cascade_cli.store import nodes
from cascade_cli.store.feeds import create_feed
from cascade_cli.store.tasks import create_task
from tests.child.deployment import Deployment

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("CASCADE_CHROMIUM", "/usr/bin/chromium")
# Flags for a sandboxed CI container without a GPU, network services or a user profile.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
BASE = "/cascade"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser test cannot run under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture
def sync_playwright() -> Any:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[test]')")
    return sync_playwright


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[Deployment, FeedServer]]:
    with FeedServer(delay=0.8) as srv:  # slow enough to see the run progress
        dep = Deployment(tmp_path, base_path=BASE,
                         scheduler={"enabled": False, "timezone": "Asia/Shanghai"})
        try:
            yield dep, srv
        finally:
            dep.close()


def _seed(dep: Deployment, srv: FeedServer) -> None:
    """Ten demo feeds plus one that answers 404, one manual task over them, one on a cron."""
    clock = SystemClock()
    feeds = [FeedIn(id=m["id"], url=srv.url_for(m["file"]), kind=m["kind"],
                    mp_name=m["mp_name"]) for m in manifest()]
    feeds.append(FeedIn(id="MP_WXS_GONE", url=srv.url_for("gone.xml"), mp_name="已下线的公众号"))
    with dep.store.session() as s:
        for f in feeds:
            create_feed(s, clock.now(), f)
        create_task(s, clock.now(), MessageTaskIn(name="all-feeds", mps_id=[f.id for f in feeds]))
        create_task(s, clock.now(), MessageTaskIn(name="morning-digest", mps_id=[feeds[0].id],
                                                  cron_exp="0 9 * * *"))


def _child_config(dep: Deployment, name: str) -> Path:
    """What ``Deployment.child_config`` writes, with the node made in-process: each
    ``cascade init --child`` subprocess costs seconds of interpreter start-up."""
    with dep.store.session() as s:
        _node, creds = nodes.create_node(s, SystemClock().now(), name, max_capacity=2)
    path = dep.tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "cascade": {"enabled": True, "node_type": "child", "parent_api_url": dep.url,
                    "api_key": creds.api_key, "api_secret": creds.api_secret,
                    "heartbeat_interval": 1},
        "child": {"claim_wait": 1, "fetch_timeout": 10, "drain_timeout": 10, "capacity": 2,
                  "spool_path": f"{name}-spool.db"},
        "log": {"level": "info"}}), encoding="utf-8")
    return path


def test_dashboard_in_chromium(sync_playwright: Any,  # first: skips before any process starts
                               deployment: tuple[Deployment, FeedServer], tmp_path: Path) -> None:
    started = time.monotonic()
    dep, srv = deployment
    _seed(dep, srv)
    dep.start_parent()
    for name in ("child-a", "child-b"):
        dep.start_child(name, config=_child_config(dep, name))
    with dep.store.session() as s:
        secret = tokens.ensure_secret(dep.settings.admin_token_secret_file)
        token, _row = tokens.issue(s, SystemClock().now(), secret, ttl=3600, label="browser")
    ui = f"{dep.url}{BASE}/ui"
    shots = tmp_path / "screenshots"
    shots.mkdir()

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 800}, locale="en-US")
        context.set_default_timeout(20_000)
        page = context.pages[0] if context.pages else context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))

        def shot(name: str, full_page: bool = True) -> None:
            page.screenshot(path=str(shots / f"{name}.png"), full_page=full_page)

        # log in: the root of the sub-path leads to the login form
        page.goto(f"{dep.url}{BASE}/")
        page.wait_for_selector("#token")
        shot("login")
        page.fill("#token", token)
        page.click("#login-submit")
        page.wait_for_url(f"{ui}/")
        cookie = next(c for c in context.cookies() if c["name"] == "cascade_ui")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert cookie["path"] == f"{BASE}/ui"

        # both children online (the overview refreshes itself as their heartbeats arrive)
        page.wait_for_selector('#node-child-a[data-status="online"]')
        page.wait_for_selector('#node-child-b[data-status="online"]')
        assert page.inner_text("#card-online .value") == "2"
        shot("overview")

        # dispatch from the tasks page, follow the link to the run
        page.click("#nav-tasks")
        page.wait_for_selector("#task-all-feeds")
        assert "09:00:00" in page.inner_text("#task-morning-digest .fires")
        page.click("#task-all-feeds .act-dispatch")
        page.wait_for_selector("#flash-link:not([hidden])")
        assert "dispatched" in page.inner_text("#flash-message")
        # the action refreshes the table at once: the task's last run is there
        page.wait_for_selector("#task-all-feeds .badge.s-running", timeout=5_000)
        shot("tasks")
        page.click("#flash-link")
        page.wait_for_selector("tr.alloc")
        # the page is not reloaded from here on: a marker on window survives only without one
        page.evaluate("window.__sameDocument = true")
        first = page.eval_on_selector_all("tr.alloc", "rows => rows.map(r => r.dataset.status)")
        assert len(first) >= 2 and set(first) != {"completed"}, first
        page.wait_for_function(
            "() => { const rows = [...document.querySelectorAll('tr.alloc')];"
            " return rows.length > 0 && rows.every(r => r.dataset.status === 'completed')"
            " && document.querySelector('#run-summary').dataset.status === 'finished'; }",
            timeout=30_000)
        assert page.evaluate("window.__sameDocument === true")
        nodes_used = set(page.eval_on_selector_all(
            "tr.alloc td:nth-child(2)", "cells => cells.map(c => c.textContent.trim())"))
        assert nodes_used <= {"child-a", "child-b"} and nodes_used, nodes_used
        assert "HTTP 404" in page.inner_text("table.results") or \
            "404" in page.inner_text("table.results")
        shot("run")

        page.click("#nav-runs")
        page.wait_for_selector('tr[data-status="finished"]')
        shot("runs")

        page.click("#nav-feeds")
        page.wait_for_selector('#feed-MP_WXS_GONE .streak')
        assert page.inner_text("#feed-MP_WXS_GONE .streak") == "1"
        shot("feeds")

        # disable child-b; rotate its secret (shown once)
        page.click("#nav-nodes")
        page.click("#node-child-b .act-disable")
        page.wait_for_selector('#node-child-b[data-status="disabled"]')
        page.click("#node-child-b .act-rotate")
        page.wait_for_selector("#flash-secret:not([hidden])")
        assert page.inner_text("#flash-api-secret").startswith("CS")
        shot("nodes")
        page.reload()
        assert page.inner_text("#flash-api-secret") == ""  # once: not in the page again

        # Chinese labels, switched from the header
        page.click("a.lang[hreflang=zh]")
        page.wait_for_selector("text=停用")
        page.click("#nav-overview")
        page.wait_for_selector("text=在线节点")
        shot("overview-zh")

        # /docs: Swagger UI from the parent itself, its Authorize button knows both schemes
        page.goto(f"{dep.url}{BASE}/docs")
        page.click(".swagger-ui .btn.authorize")
        page.wait_for_selector("text=adminToken")
        page.wait_for_selector("text=nodeKey")
        shot("docs", full_page=False)
        assert not errors, errors
        # nothing was loaded from anywhere but the parent (no CDN)
        outside = [u for u in requested if not u.startswith((dep.url + "/", "data:"))]
        assert not outside, outside
        context.close()

    # what the browser did happened on the parent
    with dep.store.session() as s:
        assert not nodes.get_node(s, "child-b").enabled
        assert nodes.get_node(s, "child-a").enabled
    if os.environ.get("CASCADE_DOCS_SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy(png, DOCS_IMG / f"dashboard-{png.name}")
    assert time.monotonic() - started < 60
