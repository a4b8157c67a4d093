"""Parent checks (guide problems 3 and 4, database, nodes, notifications, security), each on a
real database in the broken state."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from cascade_cli.clock import FakeClock
from cascade_cli.config import load_settings
from cascade_cli.domain.dispatch import dispatch
from cascade_cli.protocol import FeedIn, MessageTaskIn
from cascade_cli.store import allocations as alloc_repo
from cascade_cli.store import feeds as feed_repo
from cascade_cli.store import migrate
from cascade_cli.store import nodes as node_repo
from cascade_cli.store import tasks as task_repo
from cascade_cli.store.engine import Store
from cascade_cli.store.models import (
    AdminToken,
    Allocation,
    Delivery,
    FeedResult,
    MessageTask,
    Node,
)
from tests.doctor.conftest import diagnose, parent_config


class P:
    def __init__(self, tmp_path: Path, clock: FakeClock, **parent: object) -> None:
        self.tmp = tmp_path
        self.cfg = parent_config(tmp_path, **parent)
        self.settings = load_settings(self.cfg, environ={})
        self.store = Store.from_url(self.settings.database_url)
        migrate.upgrade(self.store)
        self.clock = clock

    def run(self, *names: str):
        return diagnose(self.tmp, self.cfg, list(names), clock=self.clock)

    def node(self, name: str, capacity: int = 2, seen_ago: float | None = 0) -> Node:
        with self.store.session() as s:
            n, _ = node_repo.create_node(s, self.clock.now(), name, max_capacity=capacity)
            if seen_ago is not None:
                n.last_heartbeat_at = self.clock.now() - timedelta(seconds=seen_ago)
            return n

    def feeds(self, *ids: str, status: int = 1) -> None:
        with self.store.session() as s:
            for i in ids:
                feed_repo.create_feed(s, self.clock.now(), FeedIn(
                    id=i, url=f"https://example.com/{i}.xml", status=status))

    def task(self, name: str = "daily", feeds: tuple[str, ...] = ("MP_WXS_1",), **raw: object
             ) -> str:
        """Insert the row directly: doctor must catch what validation would refuse today
        (rows written by older versions, or edited in the database)."""
        now = self.clock.now()
        with self.store.session() as s:
            t = MessageTask(name=name, mps_id=list(feeds), status=1, created_at=now,
                            updated_at=now, **raw)
            s.add(t)
            s.flush()
            return t.id


@pytest.fixture
def p(tmp_path: Path, clock: FakeClock) -> Iterator[P]:
    env = P(tmp_path, clock)
    yield env
    env.store.dispose()


def test_missing_database_file(tmp_path: Path) -> None:
    cfg = parent_config(tmp_path)
    r, report = diagnose(tmp_path, cfg, ["parent"])
    assert r["parent.database"].status == "failed"
    assert "does not exist" in r["parent.database"].summary
    assert "cascade init" in (r["parent.database"].fix or "")
    assert r["parent.nodes"].status == "skipped"
    assert not (tmp_path / "parent-data" / "cascade.db").exists()  # doctor created nothing
    assert report.exit_code == 1


def test_unreachable_server_database(tmp_path: Path) -> None:
    from tests.doctor.conftest import free_port, write_config

    cfg = write_config(tmp_path / "pg.yaml", {
        "database": {"url": f"postgresql://u:secretpw@127.0.0.1:{free_port()}/cascade"},
        "data_dir": str(tmp_path / "d")})
    r, _ = diagnose(tmp_path, cfg, ["parent.database", "parent.schema"])
    assert r["parent.database"].status == "failed"
    assert "unreachable" in r["parent.database"].summary
    assert "secretpw" not in r["parent.database"].summary + str(r["parent.database"].details)
    assert "database.url" in (r["parent.database"].fix or "")


def test_schema_missing_and_current(tmp_path: Path, p: P) -> None:
    r, _ = p.run("parent.schema")
    assert r["parent.schema"].status == "ok"
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg = parent_config(empty)
    (empty / "parent-data" / "cascade.db").write_bytes(b"")
    r, _ = diagnose(empty, cfg, ["parent.schema"])
    assert r["parent.schema"].status == "failed"
    assert r["parent.schema"].fix == "run 'cascade init' on the parent"


def test_nodes_offline_never_seen_and_old_credentials(p: P) -> None:
    p.node("online-1")
    p.node("gone", seen_ago=3600)
    p.node("fresh", seen_ago=None)
    old = p.node("old")
    with p.store.session() as s:
        s.get(Node, old.id).credentials_rotated_at = p.clock.now() - timedelta(days=200)
    r, report = p.run("parent.nodes")
    n = r["parent.nodes"]
    assert n.status == "warning"
    text = "\n".join(n.details)
    assert "node 'gone' is offline" in text
    assert "node 'fresh' was created but never connected" in text
    assert "node 'old' credentials not rotated for 200 days" in text
    assert "'cascade run-child' on gone's host" in (n.fix or "")
    assert "cascade nodes rotate old" in (n.fix or "")
    assert "cascade init --child fresh" in (n.fix or "")
    assert n.data["counts"]["online"] == 2
    assert report.exit_code == 0


def test_no_nodes(p: P) -> None:
    r, _ = p.run("parent.nodes")
    assert r["parent.nodes"].status == "warning"
    assert "cascade init --child NAME" in (r["parent.nodes"].fix or "")


def test_task_naming_missing_and_disabled_feeds(p: P) -> None:
    p.feeds("MP_WXS_1")
    p.feeds("MP_WXS_OFF", status=0)
    p.task(feeds=("MP_WXS_1", "MP_WXS_404", "MP_WXS_OFF"))
    r, report = p.run("parent.tasks")
    t = r["parent.tasks"]
    assert t.status == "failed"
    assert any("MP_WXS_404" in d and "公众号不存在" in d for d in t.details)
    assert any("disabled feed(s)" in d and "MP_WXS_OFF" in d for d in t.details)
    assert "cascade feeds add URL --id ID" in (t.fix or "")
    assert "cascade tasks update daily --feeds" in (t.fix or "")
    assert report.exit_code == 1


def test_task_invalid_cron_webhook_template_no_feeds(p: P) -> None:
    p.feeds("MP_WXS_1")
    p.task("bad-cron", cron_exp="61 * * * *")
    p.task("bad-hook", web_hook_url="ftp://hooks.example.com/x")
    p.task("bad-template", message_template="{{ articles | nosuchfilter }}")
    p.task("empty", feeds=())
    r, _ = p.run("parent.tasks")
    t = r["parent.tasks"]
    assert t.status == "failed"
    text = "\n".join(t.details)
    assert "task 'bad-cron': invalid cron expression '61 * * * *'" in text
    assert "task 'bad-hook'" in text and "ftp://" in text
    assert "task 'bad-template': message template does not render" in text
    assert "task 'empty' is enabled but names no feed" in text
    fix = t.fix or ""
    assert "cascade tasks update bad-cron --cron" in fix
    assert "cascade tasks update bad-hook --webhook https://" in fix
    assert "cascade tasks update bad-template --template-file FILE" in fix
    assert "cascade tasks disable empty" in fix


def test_valid_tasks_pass(p: P) -> None:
    p.feeds("MP_WXS_1")
    with p.store.session() as s:
        task_repo.create_task(s, p.clock.now(), MessageTaskIn(
            name="ok", mps_id=["MP_WXS_1"], cron_exp="0 9 * * *",
            web_hook_url="https://hooks.example.com/x"))
    r, _ = p.run("parent.tasks")
    assert r["parent.tasks"].status == "ok", r["parent.tasks"]


def _dispatched(p: P) -> str:
    p.feeds("MP_WXS_1", "MP_WXS_2")
    with p.store.session() as s:
        t = task_repo.create_task(s, p.clock.now(), MessageTaskIn(
            name="daily", mps_id=["MP_WXS_1", "MP_WXS_2"]))
        dispatch(s, p.clock.now(), p.settings, task_id=t.id, force=True)
        return t.id


def test_pending_with_no_online_node(p: P) -> None:
    p.node("gone", seen_ago=3600)
    _dispatched(p)
    r, report = p.run("parent.pending")
    pend = r["parent.pending"]
    assert pend.status == "failed"
    assert "no child node is online" in pend.summary
    assert "gone: offline" in pend.details
    assert "'cascade run-child' on the host of gone" in (pend.fix or "")  # named, not NAME
    assert report.exit_code == 1


def test_pending_all_nodes_at_capacity_and_not_claiming(p: P) -> None:
    n = p.node("busy", capacity=1)
    _dispatched(p)
    p.clock.advance(1)  # a second run of the same task (runs are unique per tick)
    with p.store.session() as s:
        tid = s.query(MessageTask).one().id
        dispatch(s, p.clock.now(), p.settings, task_id=tid, force=True)
        node = s.get(Node, n.id)
        assert alloc_repo.claim(s, p.clock.now(), node, p.settings)
    r, _ = p.run("parent.pending")
    assert r["parent.pending"].status == "warning"
    assert "every online node is at capacity" in r["parent.pending"].summary
    assert "cascade init --child NAME" in (r["parent.pending"].fix or "")


def test_pending_ignored_by_online_node(p: P) -> None:
    p.node("idle")
    _dispatched(p)
    r, _ = p.run("parent.pending")
    assert r["parent.pending"].status == "ok"
    p.clock.advance(3600)
    with p.store.session() as s:  # the node keeps heartbeating but never claims
        s.query(Node).update({Node.last_heartbeat_at: p.clock.now()})
    r, _ = p.run("parent.pending")
    assert r["parent.pending"].status == "warning"
    assert "online but not claiming" in r["parent.pending"].summary
    assert "restart it" in (r["parent.pending"].fix or "")


def test_expired_leases_not_reaped_and_stuck_allocations(p: P) -> None:
    n = p.node("n1", capacity=5)
    _dispatched(p)
    with p.store.session() as s:
        claimed = alloc_repo.claim(s, p.clock.now(), s.get(Node, n.id), p.settings, max_count=5)
        assert claimed
    p.clock.advance(p.settings.parent.lease_ttl + 120)  # nobody reaped
    r, _ = p.run("parent.leases", "parent.stuck")
    assert r["parent.leases"].status == "warning"
    assert "the reaper is not running" in r["parent.leases"].summary
    assert "cascade serve-parent" in (r["parent.leases"].fix or "")
    assert r["parent.stuck"].status == "ok"
    # now the child keeps renewing the lease for hours without finishing
    p.clock.advance(3 * 3600)
    with p.store.session() as s:
        s.query(Allocation).update({Allocation.status: "executing",
                                    Allocation.lease_expires_at: p.clock.now()
                                    + timedelta(seconds=200)})
    r, _ = p.run("parent.leases", "parent.stuck")
    assert r["parent.leases"].status == "ok"
    st = r["parent.stuck"]
    assert st.status == "warning"
    assert "the child may hang on a feed" in st.summary and "n1" in st.summary
    assert "child.fetch_timeout" in (st.fix or "")


def test_failure_rate_per_node_and_feed(p: P) -> None:
    n = p.node("flaky")
    now = p.clock.now()
    with p.store.session() as s:
        for i in range(4):
            s.add(FeedResult(allocation_id=f"a{i}", feed_id="MP_WXS_9", node_id=n.id,
                             status="failed", error="HTTP 503 from bridge\ntrace...",
                             created_at=now - timedelta(hours=1)))
        s.add(FeedResult(allocation_id="a9", feed_id="MP_WXS_8", node_id=n.id,
                         status="success", created_at=now - timedelta(hours=1)))
        s.add(FeedResult(allocation_id="old", feed_id="MP_WXS_7", node_id=n.id,
                         status="failed", error="ancient", created_at=now - timedelta(days=3)))
    r, _ = p.run("parent.failures")
    f = r["parent.failures"]
    assert f.status == "warning"
    text = "\n".join(f.details)
    # The source answered (HTTP 503): the feed is blamed, not the node's network.
    assert "node 'flaky': 4/5 fetches failed, mostly because sources answered" in text
    assert "feed 'MP_WXS_9': 4/4 fetches failed" in f.summary
    assert "处理公众号失败 MP_WXS_9" in f.summary and "the source answers HTTP 503" in f.summary
    assert "4× HTTP 503 from bridge" in f.summary
    assert "MP_WXS_7" not in f.data["feeds"]
    assert "cascade feeds update MP_WXS_9 --url" in (f.fix or "")
    assert "flaky's host" not in (f.fix or "")


def test_network_failures_blame_the_node(p: P) -> None:
    n = p.node("cut-off")
    now = p.clock.now()
    with p.store.session() as s:
        for i in range(4):
            s.add(FeedResult(allocation_id=f"a{i}", feed_id=f"MP_WXS_{i}", node_id=n.id,
                             status="failed", error="[Errno -3] Temporary failure in name "
                             "resolution", created_at=now - timedelta(hours=1)))
    f = p.run("parent.failures")[0]["parent.failures"]
    assert f.status == "warning"
    assert "node 'cut-off': 4/4 feed fetches failed" in f.summary
    assert "cascade doctor' on cut-off's host" in (f.fix or "")


def test_source_rate_limit_blames_the_feed(p: P) -> None:
    n = p.node("busy")
    now = p.clock.now()
    with p.store.session() as s:
        for i in range(3):
            s.add(FeedResult(allocation_id=f"a{i}", feed_id="MP_WXS_RL", node_id=n.id,
                             status="failed", error="HTTP 429 Too Many Requests from "
                             "https://rsshub.example/x", created_at=now - timedelta(hours=1)))
    f = p.run("parent.failures")[0]["parent.failures"]
    assert "feed 'MP_WXS_RL'" in f.summary and "429 Too Many Requests (rate limited)" in f.summary
    assert "rate-limits the children" in (f.fix or "") and "--jitter" in (f.fix or "")
    assert "network" not in (f.fix or "")


def test_dead_and_stale_deliveries(p: P) -> None:
    tid = p.task("notify-me", web_hook_url="https://hooks.example.com/x")
    now = p.clock.now()
    with p.store.session() as s:
        s.add(Delivery(idempotency_key="k1", task_id=tid, url="https://hooks.example.com/x",
                       body="{}", status="dead", attempts=8, last_error="HTTP 410 Gone",
                       last_status_code=410, created_at=now, updated_at=now))
        s.add(Delivery(idempotency_key="k2", task_id=tid, url="https://hooks.example.com/x",
                       body="{}", status="pending", created_at=now - timedelta(hours=2),
                       updated_at=now))
    r, report = p.run("parent.notifications")
    d = r["parent.notifications"]
    assert d.status == "failed"
    assert "1 dead notification" in d.summary and "notify-me" in d.summary
    assert "HTTP 410 Gone" in d.summary
    assert any("pending, the oldest for 2.0 h" in x for x in d.details)
    assert "--webhook" in (d.fix or "") and "cascade deliveries" in (d.fix or "")
    assert report.exit_code == 1


def test_plain_aksk_on_non_tls_listener(tmp_path: Path, clock: FakeClock) -> None:
    env = P(tmp_path, clock, host="0.0.0.0")
    r, _ = env.run("parent.plain_auth")
    assert r["parent.plain_auth"].status == "warning"
    assert "parent.auth.allow_plain_secret: false" in (r["parent.plain_auth"].fix or "")
    env.store.dispose()
    (tmp_path / "tls").mkdir()
    env2 = P(tmp_path / "tls", clock, host="0.0.0.0", public_url="https://parent.example.com")
    r, _ = env2.run("parent.plain_auth")
    assert r["parent.plain_auth"].status == "ok"
    env2.store.dispose()


def test_admin_secret_permissions_and_tokens_without_expiry(p: P) -> None:
    secret = p.settings.admin_token_secret_file
    r, _ = p.run("parent.admin_secret")
    assert r["parent.admin_secret"].status == "warning"  # not created yet
    secret.write_bytes(b"k" * 64)
    os.chmod(secret, 0o644)
    r, _ = p.run("parent.admin_secret")
    assert r["parent.admin_secret"].status == "failed"
    assert r["parent.admin_secret"].fix == f"chmod 600 {secret}"
    os.chmod(secret, 0o600)
    r, _ = p.run("parent.admin_secret")
    assert r["parent.admin_secret"].status == "ok"
    with p.store.session() as s:
        s.add(AdminToken(jti="forever-token-1", label="ci", created_at=p.clock.now(),
                         expires_at=None))
        s.add(AdminToken(jti="expiring-token", label="ops", created_at=p.clock.now(),
                         expires_at=p.clock.now() + timedelta(days=1)))
    r, _ = p.run("parent.admin_tokens")
    t = r["parent.admin_tokens"]
    assert t.status == "warning" and "'ci'" in t.summary and "ops" not in t.summary
    assert "cascade token revoke" in (t.fix or "")


def test_parent_checks_run_on_every_database(any_db_url: str, tmp_path: Path,
                                             clock: FakeClock) -> None:
    from tests.doctor.conftest import write_config

    store = Store.from_url(any_db_url)
    migrate.upgrade(store)
    now = clock.now()
    try:
        with store.session() as s:
            n, _ = node_repo.create_node(s, now, "n1")
            n.last_heartbeat_at = now
            s.add(MessageTask(name="t", mps_id=["MP_WXS_404"], status=1, created_at=now,
                              updated_at=now))
            s.add(FeedResult(allocation_id="a", feed_id="MP_WXS_404", node_id=n.id,
                             status="failed", error="boom", created_at=now))
        cfg = write_config(tmp_path / "db.yaml", {"database": {"url": any_db_url},
                                                  "data_dir": str(tmp_path / "d")})
        r, report = diagnose(tmp_path, cfg, ["parent"], clock=clock)
        assert report.internal_errors == []
        assert r["parent.database"].status == "ok"
        assert r["parent.schema"].status == "ok"
        assert "公众号不存在" in r["parent.tasks"].summary
        assert {x.status for x in r.values()} <= {"ok", "warning", "failed"}
    finally:
        store.dispose()
