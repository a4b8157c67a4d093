"""Child checks against the real parent app served by uvicorn on a free port: credentials
(ok / revoked / disabled), clock skew as the parent sees it, and why there is no work (guide
problem 3) - without claiming anything."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import yaml
from sqlalchemy import select

from cascade_cli.clock import FakeClock, SystemClock
from cascade_cli.domain.dispatch import dispatch
from cascade_cli.protocol import FeedIn, MessageTaskIn
from cascade_cli.store import allocations as alloc_repo
from cascade_cli.store import feeds as feed_repo
from cascade_cli.store import nodes as node_repo
from cascade_cli.store import tasks as task_repo
from cascade_cli.store.models import Allocation, Node
from tests.doctor.conftest import LiveParent, child_config, diagnose, write_config

CHILD = ["child.settings", "child.dns", "child.tcp", "child.http", "child.credentials",
         "child.clock", "child.protocol", "child.work"]


def _task(lp: LiveParent, n_feeds: int = 2, preferred: str | None = None) -> str:
    now = lp.clock.now()
    with lp.store.session() as s:
        ids = []
        for i in range(n_feeds):
            f = feed_repo.create_feed(s, now, FeedIn(id=f"MP_WXS_{i}", mp_name=f"feed {i}",
                                                     url=f"https://example.com/{i}.xml",
                                                     preferred_node=preferred))
            ids.append(f.id)
        t = task_repo.create_task(s, now, MessageTaskIn(name="daily", mps_id=ids))
        return t.id


def _dispatch(lp: LiveParent, task_id: str) -> None:
    with lp.store.session() as s:
        dispatch(s, lp.clock.now(), lp.settings, task_id=task_id, force=True)


def test_healthy_child_with_nothing_dispatched(tmp_path: Path, live_parent: LiveParent) -> None:
    creds = live_parent.node("n1")
    cfg = child_config(tmp_path, live_parent.url, creds.api_key, creds.api_secret)
    r, report = diagnose(tmp_path, cfg, CHILD)
    for name in ("child.settings", "child.dns", "child.tcp", "child.http", "child.credentials",
                 "child.clock", "child.protocol"):
        assert r[name].status == "ok", r[name]
    assert "accepted as node 'n1'" in r["child.credentials"].summary
    work = r["child.work"]
    assert work.status == "warning"
    assert "暂无任务" in work.summary and "no task was dispatched" in work.summary
    assert "cascade dispatch" in (work.fix or "")
    assert report.exit_code == 0


def test_revoked_key_is_401_with_rotate_fix(tmp_path: Path, live_parent: LiveParent) -> None:
    creds = live_parent.node("n1")
    with live_parent.store.session() as s:
        node_repo.revoke_credentials(s, live_parent.clock.now(), "n1")
    cfg = child_config(tmp_path, live_parent.url, creds.api_key, creds.api_secret)
    r, report = diagnose(tmp_path, cfg, CHILD)
    c = r["child.credentials"]
    assert c.status == "failed"
    assert "401 invalid_credentials" in c.summary
    assert "cascade nodes rotate NAME" in (c.fix or "")
    assert "cascade list-credentials" in (c.fix or "")
    assert r["child.work"].status == "skipped"
    assert report.exit_code == 1


def test_wrong_secret_is_401(tmp_path: Path, live_parent: LiveParent) -> None:
    creds = live_parent.node("n1")
    cfg = child_config(tmp_path, live_parent.url, creds.api_key, "CS" + "z" * 43,
                       auth_mode="plain")
    r, _ = diagnose(tmp_path, cfg, ["child.credentials"])
    assert r["child.credentials"].status == "failed"
    assert "401" in r["child.credentials"].summary


def test_disabled_node_is_403_with_enable_fix(tmp_path: Path, live_parent: LiveParent) -> None:
    creds = live_parent.node("n1")
    with live_parent.store.session() as s:
        node_repo.set_enabled(s, live_parent.clock.now(), "n1", False)
    cfg = child_config(tmp_path, live_parent.url, creds.api_key, creds.api_secret)
    r, _ = diagnose(tmp_path, cfg, CHILD)
    c = r["child.credentials"]
    assert c.status == "failed"
    assert "403 node_disabled" in c.summary
    assert "cascade nodes enable n1" in (c.fix or "")  # the name the parent told


def test_skewed_child_clock_is_refused_by_real_parent(tmp_path: Path,
                                                      live_parent: LiveParent) -> None:
    creds = live_parent.node("n1")
    cfg = child_config(tmp_path, live_parent.url, creds.api_key, creds.api_secret)
    skewed = FakeClock(SystemClock().now() + timedelta(hours=1))  # this host runs 1 h ahead
    r, _ = diagnose(tmp_path, cfg, CHILD, clock=skewed)
    assert r["child.credentials"].status == "failed"
    assert "clock" in r["child.credentials"].summary
    clock = r["child.clock"]
    assert clock.status == "failed"
    assert "ahead of the parent" in clock.summary
    assert "HTTP Date header" in clock.summary
    assert "timedatectl set-ntp true" in (clock.fix or "")


def test_work_available_is_not_claimed(tmp_path: Path, live_parent: LiveParent) -> None:
    creds = live_parent.node("n1")
    _dispatch(live_parent, _task(live_parent))
    cfg = child_config(tmp_path, live_parent.url, creds.api_key, creds.api_secret)
    r, _ = diagnose(tmp_path, cfg, ["child.work"])
    assert r["child.work"].status == "ok"
    assert "can claim" in r["child.work"].summary
    with live_parent.store.session() as s:
        statuses = set(s.scalars(select(Allocation.status)))
    assert statuses == {"pending"}  # doctor never claims


def test_all_taken_by_other_nodes(tmp_path: Path, live_parent: LiveParent) -> None:
    creds = live_parent.node("n1")
    live_parent.node("n2", capacity=10)
    _dispatch(live_parent, _task(live_parent))
    with live_parent.store.session() as s:
        other = s.scalar(select(Node).where(Node.name == "n2"))
        assert alloc_repo.claim(s, live_parent.clock.now(), other, live_parent.settings,
                                max_count=10)
    cfg = child_config(tmp_path, live_parent.url, creds.api_key, creds.api_secret)
    r, _ = diagnose(tmp_path, cfg, ["child.work"])
    assert r["child.work"].status == "ok"
    assert "already held by other nodes" in r["child.work"].summary
    assert r["child.work"].data["held_by_other_nodes"] >= 1


def test_node_at_capacity(tmp_path: Path, live_parent: LiveParent) -> None:
    creds = live_parent.node("n1", capacity=1)
    tid = _task(live_parent, n_feeds=2)
    _dispatch(live_parent, tid)
    _dispatch(live_parent, tid)  # a second run: at least two pending allocations
    with live_parent.store.session() as s:
        me = s.scalar(select(Node).where(Node.name == "n1"))
        assert len(alloc_repo.claim(s, live_parent.clock.now(), me, live_parent.settings)) == 1
    cfg = child_config(tmp_path, live_parent.url, creds.api_key, creds.api_secret)
    r, _ = diagnose(tmp_path, cfg, ["child.work"])
    assert r["child.work"].status == "warning"
    assert "capacity" in r["child.work"].summary
    # a command that exists, with the node's own name filled in
    assert "cascade nodes set n1 --capacity 2" in (r["child.work"].fix or "")


def test_allocations_targeted_at_another_online_node(tmp_path: Path,
                                                     live_parent: LiveParent) -> None:
    creds = live_parent.node("n1")
    live_parent.node("n2")
    _dispatch(live_parent, _task(live_parent, preferred="n2"))
    cfg = child_config(tmp_path, live_parent.url, creds.api_key, creds.api_secret)
    r, _ = diagnose(tmp_path, cfg, ["child.work"])
    w = r["child.work"]
    assert w.status == "warning"
    assert "reserved for other online nodes" in w.summary and "(n2)" in w.summary
    assert "preferred_node" in (w.fix or "")


def test_spool_with_results_waiting(tmp_path: Path) -> None:
    from cascade_cli.child.spool import Spool

    cfg = child_config(tmp_path, "http://127.0.0.1:9")
    spool_path = tmp_path / "child-data" / "spool.db"
    sp = Spool(spool_path)
    sp.add_articles("a1", 1, "MP_WXS_1", [{"title": "x", "url": "https://e/1"}])
    # One feed's articles as one row, as the worker spools them: three articles, not one row.
    three = [{"title": f"y{i}", "url": f"https://e/y{i}"} for i in range(3)]
    sp.add_encoded("a1", 1, [("MP_WXS_2", Spool.encode_articles(three), 3)])
    sp.add_completion("a1", "t1", 1, [{"feed_id": "MP_WXS_1", "status": "success"}], 4)
    sp.close()
    r, _ = diagnose(tmp_path, cfg, ["child.spool"])
    assert r["child.spool"].status == "ok"
    assert r["child.spool"].data["articles_waiting"] == 4
    later = FakeClock(SystemClock().now() + timedelta(hours=2))
    r, _ = diagnose(tmp_path, cfg, ["child.spool"], clock=later)
    assert r["child.spool"].status == "warning"
    assert "wait for upload" in r["child.spool"].summary and "2.0 h" in r["child.spool"].summary
    assert "run-child" in (r["child.spool"].fix or "")


def test_spool_folder_not_writable(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root ignores file modes: a path under a regular file can never be created either
        blocker = tmp_path / "blocker"
        blocker.write_text("x")
        spool = blocker / "sub" / "spool.db"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        os.chmod(ro, 0o500)
        spool = ro / "spool.db"
    cfg = child_config(tmp_path, "http://127.0.0.1:9")
    data = yaml.safe_load(cfg.read_text())
    data["child"] = {"spool_path": str(spool)}
    write_config(cfg, data)
    r, _ = diagnose(tmp_path, cfg, ["child.spool"])
    assert r["child.spool"].status == "failed"
    assert "not writable" in r["child.spool"].summary
    assert "child.spool_path" in (r["child.spool"].fix or "")


def test_corrupt_spool(tmp_path: Path) -> None:
    cfg = child_config(tmp_path, "http://127.0.0.1:9")
    path = tmp_path / "child-data" / "spool.db"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not sqlite" * 100)
    r, _ = diagnose(tmp_path, cfg, ["child.spool"])
    assert r["child.spool"].status == "failed"
    assert "mv " in (r["child.spool"].fix or "")
