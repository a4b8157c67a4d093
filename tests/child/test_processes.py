"""Real processes and sockets: serve-parent, run-child, signals, crashes and outages."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cascade_cli.child.spool import Spool
from cascade_cli.demo.server import FeedServer, manifest
from tests.child.deployment import Deployment, wait_for

pytestmark = pytest.mark.slow


def feeds_of(srv: FeedServer, n: int | None = None) -> list[dict[str, Any]]:
    return [{"id": m["id"], "url": srv.url_for(m["file"]), "kind": m["kind"],
             "mp_name": m["mp_name"]} for m in manifest()[:n]]


TOTAL_ARTICLES = 61  # the ten bundled feeds


@pytest.fixture
def dep(tmp_path: Path) -> Iterator[Deployment]:
    d = Deployment(tmp_path)
    yield d
    d.close()


def make(tmp_path: Path, **parent: Any) -> Deployment:
    return Deployment(tmp_path, **parent)


def test_burst_child_against_real_parent(dep: Deployment) -> None:
    with FeedServer() as srv:
        dep.start_parent()
        task_id = dep.task(feeds_of(srv))
        cfg = dep.child_config("c1")
        dep.dispatch(task_id)
        proc = dep.start_child("c1", "--burst", "--log-format", "json", config=cfg)
        assert proc.wait(60) == 0, dep.log("c1")
    assert set(dep.statuses(task_id)) == {"completed"}
    assert dep.article_count() == (TOTAL_ARTICLES, TOTAL_ARTICLES)
    log = dep.log("c1")
    assert "no work left (--burst)" in log and log.count("; reported") == 5
    assert "CS" not in log.replace("CS***", "")  # no secret in the log
    # --log-format json: one object per line; allocation lines carry the facts as fields
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    allocs = [r for r in records if r.get("outcome")]
    assert len(allocs) == 5 and {r["outcome"] for r in allocs} == {"completed"}
    assert sum(r["articles"] for r in allocs) == TOTAL_ARTICLES
    assert all({"allocation_id", "feeds_ok", "feeds_failed", "duration_s"} <= r.keys()
               for r in allocs)


def test_parent_down_20s_while_child_holds_work(dep: Deployment) -> None:
    """The parent stops while the child is fetching; everything arrives once it is back."""
    with FeedServer(delay=4) as srv:
        dep.start_parent()
        task_id = dep.task(feeds_of(srv, 4))
        dep.dispatch(task_id)
        dep.start_child("c1", capacity=4, per_host_concurrency=8)
        wait_for(lambda: dep.statuses(task_id).count("executing") == 2, 20, "work held")
        dep.stop_parent()
        time.sleep(20)  # the fetches finish meanwhile: results wait in the child's spool
        assert "parent unavailable" in dep.log("c1")
        dep.start_parent()
        wait_for(lambda: set(dep.statuses(task_id)) == {"completed"}, 30, "results delivered")
    rows, distinct = dep.article_count()
    assert rows == distinct == sum(a["article_count"] for a in dep.allocations(task_id)) > 0
    log = dep.log("c1")
    assert log.count("parent unavailable:") == 1  # said once, not once per retry
    assert "parent reachable again" in log


def test_sigkilled_child_work_requeued_and_completed_by_another(tmp_path: Path) -> None:
    dep = make(tmp_path, lease_ttl=3, reaper_interval=0.5, max_attempts=3)
    try:
        with FeedServer(delay=1.5) as srv:
            dep.start_parent()
            task_id = dep.task(feeds_of(srv, 4))
            dep.dispatch(task_id)
            victim = dep.start_child("victim", capacity=4)
            wait_for(lambda: len([a for a in dep.allocations(task_id)
                                  if a["status"] in ("claimed", "executing")]) == 2, 20,
                     "victim holds work")
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            helper = dep.start_child("helper", capacity=4)
            wait_for(lambda: set(dep.statuses(task_id)) == {"completed"}, 40,
                     "requeued work completed")
            allocs = dep.allocations(task_id)
            assert {a["node_name"] for a in allocs} == {"helper"}
            assert all(a["attempt"] == 2 for a in allocs)
            helper.send_signal(signal.SIGTERM)
            assert helper.wait(20) == 0
        rows, distinct = dep.article_count()
        assert rows == distinct == sum(a["article_count"] for a in allocs) > 0
    finally:
        dep.close()


def test_sigterm_drains_held_work_then_exits_0(dep: Deployment) -> None:
    with FeedServer(delay=2) as srv:
        dep.start_parent()
        task_id = dep.task(feeds_of(srv, 2))
        dep.dispatch(task_id)
        child = dep.start_child("c1", drain_timeout=15)
        wait_for(lambda: "executing" in dep.statuses(task_id), 20, "work held")
        child.send_signal(signal.SIGTERM)
        assert child.wait(20) == 0, dep.log("c1")
    assert dep.statuses(task_id) == ["completed"]
    assert "draining" in dep.log("c1")
    spool = Spool(dep.tmp / "c1-spool.db")
    assert spool.is_empty()
    spool.close()


def test_sigterm_past_drain_timeout_releases_and_second_signal_exits(
        dep: Deployment) -> None:
    with FeedServer(delay=30) as srv:
        dep.start_parent()
        task_id = dep.task(feeds_of(srv, 2))
        dep.dispatch(task_id)
        child = dep.start_child("c1", drain_timeout=1)
        wait_for(lambda: "executing" in dep.statuses(task_id), 20, "work held")
        start = time.monotonic()
        child.send_signal(signal.SIGTERM)
        assert child.wait(15) == 0, dep.log("c1")
        assert time.monotonic() - start < 8
        assert dep.statuses(task_id) == ["pending"]  # released: another child may take it
        assert "releasing it" in dep.log("c1")
        # a second signal does not wait for anything
        child2 = dep.start_child("c2", drain_timeout=60)
        wait_for(lambda: "executing" in dep.statuses(task_id), 20, "work held again")
        child2.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        child2.send_signal(signal.SIGTERM)
        assert child2.wait(5) == 1
        assert "exiting now" in dep.log("c2")


def test_run_child_refuses_bad_config(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("cascade:\n  enabled: true\n  node_type: child\n  api_key: nope\n")
    proc = subprocess.run([sys.executable, "-m", "cascade_cli", "--config", str(cfg),
                           "run-child"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "级联客户端未初始化" in proc.stderr
    for key in ("cascade.parent_api_url", "cascade.api_key", "cascade.api_secret"):
        assert key in proc.stderr
    assert "cascade.enabled" not in proc.stderr


def test_run_child_wrong_credentials_fail_fast(dep: Deployment) -> None:
    dep.start_parent()
    cfg = dep.child_config("c1")
    text = cfg.read_text().replace("api_secret: CS", "api_secret: CSwrong")
    cfg.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "cascade_cli", "--config", str(cfg),
                           "run-child", "--burst"], capture_output=True, text=True,
                          timeout=60, cwd=dep.tmp)
    assert proc.returncode == 1
    assert "401" in proc.stderr and "invalid_credentials" in proc.stderr


def test_cascade_demo_runs(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "cascade_cli", "demo", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["completed"] == summary["allocations"] > 0
    assert summary["articles"] == TOTAL_ARTICLES
    assert set(summary["exit_codes"].values()) == {0}
