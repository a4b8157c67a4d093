"""Issue 18: ``cascade import we-mp-rss`` on a database built with the original's schema."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sqlalchemy import create_engine, select, text

from cascade_cli.store import nodes
from cascade_cli.store.engine import Store
from cascade_cli.store.models import Event, Feed, MessageTask, Node
from tests.migration import wemprss_db


def _store(parent_dir: Path) -> Store:
    return Store.from_url(f"sqlite:///{parent_dir / 'state' / 'cascade.db'}")


def test_import_dry_run_then_import_then_again(cli, parent_dir, any_db_url) -> None:
    wemprss_db.build(any_db_url)
    assert cli("init").exit_code == 0

    r = cli("import", "we-mp-rss", "--database", any_db_url, "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    dry = json.loads(r.stdout)
    assert dry["dry_run"] and len(dry["nodes"]["created"]) == 2 and dry["feeds"]["created"] == 3
    store = _store(parent_dir)
    try:
        with store.session() as s:
            assert s.scalars(select(Node)).all() == [] and s.scalars(select(Feed)).all() == []
            assert s.scalars(select(Event).where(Event.operation == "import_we_mp_rss")).all() == []

        r = cli("import", "we-mp-rss", "--database", any_db_url,
                "--feed-url-pattern", "http://wemprss:8001/feed/{id}.xml")
        assert r.exit_code == 0, r.output
        out = r.stdout
        assert "nodes: 2 new" in out and "feeds: 3 new" in out and "tasks: 4 new" in out
        assert "cascade nodes rotate" in out and "坏的" in out  # the bad cron is named
        assert "坏模板" in out and "default template" in out
        assert wemprss_db.CHILD_SECRET not in r.output

        with store.session() as s:
            by_key = {n.api_key: n for n in s.scalars(select(Node))}
            assert set(by_key) == {wemprss_db.CHILD_KEY, wemprss_db.OFF_KEY}
            child = by_key[wemprss_db.CHILD_KEY]
            assert child.legacy and child.enabled and "上海子节点" in child.description
            assert child.callback_url.endswith("/notify")
            assert not by_key[wemprss_db.OFF_KEY].enabled  # is_active false stays off
            now = child.created_at
            # the deployed child's existing secret keeps working; others do not
            assert nodes.secret_matches(child, wemprss_db.CHILD_SECRET, now)
            assert not nodes.secret_matches(child, wemprss_db.OFF_SECRET, now)
            feeds = {f.id: f for f in s.scalars(select(Feed))}
            assert feeds["MP_WXS_3941"].mp_name == "科技日报"
            assert feeds["MP_WXS_3941"].faker_id == "MzA1"
            assert feeds["MP_WXS_3941"].url == "http://wemprss:8001/feed/MP_WXS_3941.xml"
            tasks = {t.id: t for t in s.scalars(select(MessageTask))}
            assert set(tasks) == {"task-1", "task-2", "task-4", "task-5"}
            assert tasks["task-4"].message_template == wemprss_db.ORIGINAL_TEMPLATE
            assert tasks["task-5"].message_template is None  # unrenderable: the default
            t1 = tasks["task-1"]
            assert t1.mps_id == ["MP_WXS_3941", "MP_WXS_2200"] and t1.cron_exp == "0 8 * * *"
            assert t1.headers == {"X-Token": "t0k"} and t1.cookies == "sid=1; lang=zh"
            assert t1.web_hook_url.startswith("https://qyapi") and t1.status == 1
            assert t1.message_template == "### {{feed.mp_name}}"
            assert tasks["task-2"].status == 0 and tasks["task-2"].message_type == 1
            # The import is on the record (cascade events), without any secret in it.
            [event] = s.scalars(select(Event).where(Event.operation == "import_we_mp_rss"))
            assert event.count == 2 + 3 + 4 and event.status == "warning"  # a task skipped
            assert wemprss_db.CHILD_SECRET not in json.dumps(event.detail, ensure_ascii=False)

        r = cli("import", "we-mp-rss", "--database", any_db_url, "--json")
        assert r.exit_code == 0, r.output
        again = json.loads(r.stdout)
        assert again["nodes"]["created"] == [] and len(again["nodes"]["existing"]) == 2
        assert again["feeds"] == {"created": 0, "updated": 0, "unchanged": 3}
        assert again["tasks"]["created"] == [] and len(again["tasks"]["existing"]) == 4

        # rotation moves the node to Cascade credentials; the old secret overlaps
        r = cli("nodes", "rotate", child.name, "--json")
        assert r.exit_code == 0, r.output
        with store.session() as s:
            n = nodes.get_node(s, child.name)
            assert not nodes.uses_plain_legacy_secret(n) and n.public_key
            assert nodes.secret_matches(n, wemprss_db.CHILD_SECRET, now)
        r = cli("nodes", "list")
        assert "(legacy)" in r.stdout and child.name in r.stdout
        r = cli("nodes", "legacy", child.name, "maybe")
        assert r.exit_code == 2 and "'on' or 'off'" in r.stderr
        r = cli("nodes", "legacy", child.name, "off")
        assert r.exit_code == 0 and "left legacy mode" in r.stdout
    finally:
        store.dispose()


def test_import_names_a_wrong_database(cli, parent_dir, tmp_path) -> None:
    assert cli("init").exit_code == 0
    r = cli("import", "we-mp-rss", "--database", f"sqlite:///{tmp_path / 'empty.db'}")
    assert r.exit_code == 1
    assert "we_cascade_nodes" in r.stderr and "Traceback" not in r.output
    r = cli("import", "we-mp-rss", "--database", "sqlite:///x.db", "--feed-url-pattern", "x")
    assert r.exit_code == 2 and "{id}" in r.stderr


def test_doctor_lists_legacy_nodes_until_they_are_gone(cli, parent_dir, tmp_path) -> None:
    src = f"sqlite:///{tmp_path / 'wemprss.db'}"
    wemprss_db.build(src)
    assert cli("init").exit_code == 0
    r = cli("doctor", "--check", "parent.legacy_nodes", "--json")
    assert json.loads(r.stdout)["checks"][0]["status"] == "ok", r.stdout
    assert cli("import", "we-mp-rss", "--database", src).exit_code == 0
    r = cli("doctor", "--check", "parent.legacy_nodes")
    assert "legacy mode" in r.stdout and "cascade nodes rotate" in r.stdout
    store = _store(parent_dir)
    try:
        with store.session() as s:
            names = [n.name for n in s.scalars(select(Node))]
    finally:
        store.dispose()
    for n in names:
        assert n in r.stdout
    # refusing plain AK-SK would lock the imported nodes out: doctor says so
    config = parent_dir / "config.yaml"
    original = config.read_text(encoding="utf-8")
    config.write_text(original + "  auth:\n    allow_plain_secret: false\n", encoding="utf-8")
    r = cli("doctor", "--check", "parent.legacy_nodes", "--json")
    check = json.loads(r.stdout)["checks"][0]
    assert r.exit_code == 1 and check["status"] == "failed", r.stdout
    assert "cannot authenticate" in json.dumps(check, ensure_ascii=False)
    config.write_text(original, encoding="utf-8")
    for n in names:
        assert cli("nodes", "rotate", n, "--overlap", "0").exit_code == 0
        assert cli("nodes", "legacy", n, "off").exit_code == 0
    r = cli("doctor", "--check", "parent.legacy_nodes", "--json")
    assert json.loads(r.stdout)["checks"][0]["status"] == "ok", r.stdout


def test_import_gives_case_duplicates_distinct_names(cli, parent_dir, tmp_path) -> None:
    """we-mp-rss allowed 'edge-1' next to 'Edge-1', and Cascade already has 'EDGE-1': names
    differing only by case are one name here, so each imported node gets its own."""
    url = f"sqlite:///{tmp_path / 'wemprss.db'}"
    wemprss_db.build(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        for n, name in enumerate(("edge-1", "Edge-1"), 1):
            conn.execute(text(
                "INSERT INTO we_cascade_nodes (id, node_type, name, description, api_url, "
                "api_key, api_secret_hash, status, sync_config, is_active) VALUES (:id, 1, "
                ":name, '', 'http://10.0.0.9:8002', :k, :h, 1, '{}', 1)"),
                {"id": f"{n}aaaaaaa-0000-4000-8000-00000000000{n}", "name": name,
                 "k": f"edge-key-{n}", "h": hashlib.sha256(b"s").hexdigest()})
    engine.dispose()
    assert cli("init").exit_code == 0
    assert cli("init", "--child", "EDGE-1", "--json").exit_code == 0

    r = cli("import", "we-mp-rss", "--database", url, "--json")
    assert r.exit_code == 0, r.output
    created = json.loads(r.stdout)["nodes"]["created"]
    assert "edge-1-1aaaaaaa" in created and "Edge-1-2aaaaaaa" in created, created
    store = _store(parent_dir)
    try:
        with store.session() as s:
            names = [n.lower() for n in s.scalars(select(Node.name))]
        assert len(names) == len(set(names)) == 5, names  # 2 imported before, EDGE-1, 2 new
    finally:
        store.dispose()
