"""Issue 19, "doctor tells the truth": each situation built for real (database rows, config
files, a scripted parent), then doctor's verdict and its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cascade_cli.cli.main import app
from cascade_cli.clock import FakeClock
from cascade_cli.domain.dispatch import dispatch
from cascade_cli.protocol import MessageTaskIn
from cascade_cli.store import tasks as task_repo
from cascade_cli.store.models import Allocation, Delivery, FeedResult, ScheduleRun
from tests.doctor.conftest import Scripted, child_config, diagnose, free_port, write_config
from tests.doctor.test_parent_checks import P


@pytest.fixture
def p(tmp_path: Path, clock: FakeClock) -> Iterator[P]:
    env = P(tmp_path, clock)
    yield env
    env.store.dispose()


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), "COLUMNS": "200",
            "XDG_DATA_HOME": str(cwd / "xdg"),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-m", "cascade_cli", *args], capture_output=True,
                          text=True, env={**base, **(env or {})}, cwd=cwd, timeout=60)


# --- whole-allocation failures (执行父节点任务失败) ------------------------------------------


def test_a_crashed_child_fails_parent_failures_with_the_error_text(p: P) -> None:
    n = p.node("crashy")
    p.feeds("MP_WXS_1", "MP_WXS_2")
    now = p.clock.now()
    with p.store.session() as s:
        t = task_repo.create_task(s, now, MessageTaskIn(name="daily",
                                                        mps_id=["MP_WXS_1", "MP_WXS_2"]))
        dispatch(s, now, p.settings, task_id=t.id, force=True)
        for a in s.query(Allocation).all():
            a.status, a.node_id, a.updated_at = "failed", n.id, now - timedelta(minutes=5)
            a.error_message = "执行父节点任务失败: child process killed (MemoryError)"
    f = p.run("parent.failures")[0]["parent.failures"]
    assert f.status == "failed"  # no per-feed result exists: the old check said "ok"
    assert "node 'crashy'" in f.summary and "执行父节点任务失败" in f.summary
    assert "MemoryError" in f.summary and "daily" in f.summary
    assert "crashy's host" in (f.fix or "")
    assert "'cascade allocations --node crashy --status failed'" in (f.fix or "")
    assert f.data["allocations"]["crashy"]["failed"] >= 1
    # the command the fix gives runs and lists those allocations
    r = CliRunner().invoke(app, ["--config", str(p.cfg), "allocations", "--node", "crashy",
                                 "--status", "failed", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["total"] == f.data["allocations"]["crashy"]["failed"]


def test_work_lost_to_a_killed_child_fails_parent_failures(p: P) -> None:
    """SIGKILL leaves no report: the reaper times the allocation out after its last attempt."""
    n = p.node("killed")
    p.feeds("MP_WXS_1")
    now = p.clock.now()
    with p.store.session() as s:
        t = task_repo.create_task(s, now, MessageTaskIn(name="nightly", mps_id=["MP_WXS_1"]))
        dispatch(s, now, p.settings, task_id=t.id, force=True)
        for a in s.query(Allocation).all():
            a.status, a.node_id, a.updated_at = "timeout", n.id, now - timedelta(hours=1)
    f = p.run("parent.failures")[0]["parent.failures"]
    assert f.status == "failed"
    assert "node 'killed'" in f.summary and "nightly" in f.summary
    assert "lease expired after the last attempt" in f.summary
    assert "'cascade allocations --node killed --status timeout'" in (f.fix or "")
    assert "--status failed" not in (f.fix or "")
    assert f.data["allocations"]["killed"]["timed_out"] == 1


def test_a_rate_limited_feed_fix_names_the_tasks_that_fetch_it(p: P) -> None:
    n = p.node("busy")
    p.feeds("MP_WXS_RL", "MP_WXS_2")
    now = p.clock.now()
    with p.store.session() as s:
        for name, feeds in (("morning", ["MP_WXS_RL"]), ("evening", ["MP_WXS_2", "MP_WXS_RL"]),
                            ("other", ["MP_WXS_2"])):
            task_repo.create_task(s, now, MessageTaskIn(name=name, mps_id=feeds))
        for i in range(3):
            s.add(FeedResult(allocation_id=f"a{i}", feed_id="MP_WXS_RL", node_id=n.id,
                             status="failed", error="HTTP 429 Too Many Requests from "
                             "https://rsshub.example/x", created_at=now - timedelta(hours=1)))
    f = p.run("parent.failures")[0]["parent.failures"]
    fix = f.fix or ""
    assert "'cascade tasks update evening --jitter 300'" in fix
    assert "'cascade tasks update morning --jitter 300'" in fix
    assert "other" not in fix and "NAME" not in fix


# --- the scheduler fires due cron runs -----------------------------------------------------


def _cron_task(p: P, cron: str = "*/5 * * * *") -> str:
    p.feeds("MP_WXS_1")
    with p.store.session() as s:
        t = task_repo.create_task(s, p.clock.now(), MessageTaskIn(
            name="every5", mps_id=["MP_WXS_1"], cron_exp=cron))
        return t.id


def test_a_due_cron_task_without_a_run_fails_parent_scheduler(p: P) -> None:
    _cron_task(p)
    p.clock.advance(3600)  # an hour: twelve ticks came and went, nobody fired them
    sch = p.run("parent.scheduler")[0]["parent.scheduler"]
    assert sch.status == "failed"
    assert "task 'every5' was due at" in sch.summary and "no scheduler fired it" in sch.summary
    assert "cascade serve-parent" in (sch.fix or "")
    assert "cascade dispatch --task every5" in (sch.fix or "")


def test_a_fired_cron_task_passes_and_a_disabled_scheduler_is_named(tmp_path: Path,
                                                                     clock: FakeClock) -> None:
    p = P(tmp_path, clock, scheduler={"enabled": False})
    try:
        tid = _cron_task(p)
        p.clock.advance(3600)
        sch = p.run("parent.scheduler")[0]["parent.scheduler"]
        assert sch.status == "failed"
        assert "parent.scheduler.enabled: true" in (sch.fix or "")
        tick = p.clock.now() - timedelta(minutes=5)  # 00:55, the newest tick due by now
        with p.store.session() as s:
            s.add(ScheduleRun(task_id=tid, scheduled_for=tick, trigger="cron", status="done",
                              created_at=tick))
        assert p.run("parent.scheduler")[0]["parent.scheduler"].status == "ok"
    finally:
        p.store.dispose()


def test_a_task_created_after_its_last_tick_is_not_blamed(p: P) -> None:
    _cron_task(p, "0 9 * * *")  # created at midnight: 9 am has not come
    assert p.run("parent.scheduler")[0]["parent.scheduler"].status == "ok"


# --- offline_after against the heartbeat interval ------------------------------------------


def test_offline_after_shorter_than_the_heartbeat_fails(tmp_path: Path, clock: FakeClock
                                                        ) -> None:
    p = P(tmp_path, clock, offline_after=30, heartbeat_interval=60)
    try:
        hb = p.run("parent.heartbeat")[0]["parent.heartbeat"]
        assert hb.status == "failed"
        assert "parent.offline_after (30 s)" in hb.summary and "(60 s)" in hb.summary
        assert "parent.offline_after to at least 180" in (hb.fix or "")
    finally:
        p.store.dispose()
    (tmp_path / "ok").mkdir()
    fine = P(tmp_path / "ok", clock)  # defaults: offline after 180 s, heartbeat 60 s
    try:
        assert fine.run("parent.heartbeat")[0]["parent.heartbeat"].status == "ok"
    finally:
        fine.store.dispose()


# --- notifications: recent attempts all failing --------------------------------------------


def test_recent_notification_attempts_all_failing_fail_the_check(p: P) -> None:
    tid = p.task("notify-me", web_hook_url="https://hooks.example.com/x")
    now = p.clock.now()
    with p.store.session() as s:
        for i in range(3):  # still pending (retrying): not dead yet, but nothing gets through
            s.add(Delivery(idempotency_key=f"k{i}", task_id=tid,
                           url="https://hooks.example.com/x", body="{}", status="pending",
                           attempts=2, last_error="HTTP 403 Forbidden: bad token",
                           last_status_code=403, created_at=now - timedelta(minutes=3),
                           updated_at=now - timedelta(minutes=i)))
    n = p.run("parent.notifications")[0]["parent.notifications"]
    assert n.status == "failed"
    assert "the last 3 notification attempts all failed" in n.summary
    assert "HTTP 403" in n.summary and "notify-me" in n.summary
    assert "cascade tasks update notify-me --webhook URL" in (n.fix or "")
    with p.store.session() as s:
        s.add(Delivery(idempotency_key="ok", task_id=tid, url="https://hooks.example.com/x",
                       body="{}", status="delivered", attempts=1, created_at=now,
                       updated_at=now + timedelta(seconds=1)))
    assert p.run("parent.notifications")[0]["parent.notifications"].status == "ok"


# --- at capacity: a command that exists, with the node's name ------------------------------


def test_parent_pending_at_capacity_names_nodes_set(p: P) -> None:
    n = p.node("small", capacity=1)
    p.feeds("MP_WXS_1", "MP_WXS_2")
    now = p.clock.now()
    with p.store.session() as s:
        t = task_repo.create_task(s, now, MessageTaskIn(name="d", mps_id=["MP_WXS_1",
                                                                          "MP_WXS_2"]))
        dispatch(s, now, p.settings, task_id=t.id, force=True)
        dispatch(s, now + timedelta(seconds=1), p.settings, task_id=t.id, force=True)
        a = s.query(Allocation).first()
        assert a is not None
        a.status, a.node_id, a.claimed_at = "claimed", n.id, now
        a.lease_expires_at = now + timedelta(minutes=5)
    pend = p.run("parent.pending")[0]["parent.pending"]
    assert pend.status == "warning" and "at capacity" in pend.summary
    assert "'cascade nodes set small --capacity 2'" in (pend.fix or "")


# --- the role: never send a child host to 'cascade init' -----------------------------------


def test_child_config_without_node_type_is_diagnosed_as_a_child(tmp_path: Path) -> None:
    cfg = child_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    text = cfg.read_text().replace("  node_type: child\n", "")
    cfg.write_text(text)
    r, report = diagnose(tmp_path, cfg)
    assert report.role == "child"
    role = r["config.role"]
    assert role.status == "warning" and "inferred from cascade.parent_api_url" in role.summary
    assert "set cascade.node_type: child" in (role.fix or "")
    assert "child.tcp" in r and "parent.database" not in r
    assert all("cascade init'" not in (c.fix or "") for c in r.values())


@pytest.mark.slow
def test_plain_doctor_on_a_bare_host_says_the_role_is_unknown(tmp_path: Path) -> None:
    """A real process in an empty folder: no config file, no CASCADE_* variable, no parent
    database. The old doctor assumed 'parent' and advised 'cascade init'."""
    proc = cli("doctor", cwd=tmp_path)
    out = " ".join(proc.stdout.split())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "role unknown (cascade.node_type is not set" in out
    assert "the role of this host is unknown" in out
    assert "node_type: child" in out and "--role child" in out
    assert "cascade init'" not in out and "cascade init " not in out.replace(
        "cascade init --child NAME", "")
    assert not (tmp_path / "xdg").exists()  # nothing created on the host
    r, report = diagnose(tmp_path, None, environ={"XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert report.role == "unknown" and report.exit_code == 1
    assert {"config.role", "config.file"} <= set(r)
    assert not any(n.startswith(("parent.", "child.")) for n in r)


def test_env_only_child_is_a_child(tmp_path: Path) -> None:
    r, report = diagnose(tmp_path, None, ["config.role"],
                         environ={"CASCADE_PARENT_API_URL": "http://parent:8001"})
    assert report.role == "child"
    assert "inferred from cascade.parent_api_url" in r["config.role"].summary


def test_parent_sections_and_an_existing_database_make_a_parent(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "p.yaml", {"parent": {"port": 8009}})
    _, report = diagnose(tmp_path, cfg, ["config.role"])
    assert report.role == "parent"
    bare = write_config(tmp_path / "bare.yaml", {"data_dir": str(tmp_path / "d")})
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "cascade.db").write_bytes(b"")
    _, report = diagnose(tmp_path, bare, ["config.role"])
    assert report.role == "parent"


# --- 429 from the parent's auth throttle ---------------------------------------------------


def test_a_429_from_the_auth_throttle_says_it_is_the_throttle(
        tmp_path: Path, scripted: Callable[[Any], Scripted]) -> None:
    def answer(_h: Any) -> tuple[int, Any, dict[str, str]]:
        return 429, {"code": 429, "error": "too_many_requests",
                     "message": "too many failed authentication attempts from this address",
                     "data": None}, {"Retry-After": "42"}

    srv = scripted(answer)
    cfg = child_config(tmp_path, srv.url)
    r, _ = diagnose(tmp_path, cfg, ["child"])
    http, cred = r["child.http"], r["child.credentials"]
    assert http.status == "warning" and "auth throttle" in http.summary
    assert "not an overloaded parent" in http.summary
    assert cred.status == "failed" and "auth throttle" in cred.summary
    assert "42 s" in (cred.fix or "")


def test_an_html_5xx_is_named_as_another_server(
        tmp_path: Path, scripted: Callable[[Any], Scripted]) -> None:
    srv = scripted(lambda _h: (501, b"<html>Unsupported method</html>", {}))
    cfg = child_config(tmp_path, srv.url)
    http = diagnose(tmp_path, cfg, ["child.http"])[0]["child.http"]
    assert http.status == "failed"
    assert "HTTP 501 without Cascade's JSON envelope" in http.summary
    assert "not a Cascade parent's answer" in http.summary
    assert "parent.port (default 8001)" in (http.fix or "")
