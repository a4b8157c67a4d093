"""feeds / tasks / dispatch / allocations through the real CLI entry point (CliRunner)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cascade_cli.cli.main import app

runner = CliRunner()


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text("data_dir: data\nparent:\n  batch_size: 2\n", encoding="utf-8")
    monkeypatch.setenv("CASCADE_CONFIG", str(path))
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    return path


def cli(*args):
    return runner.invoke(app, list(args))


def test_feeds_tasks_dispatch_allocations_roundtrip(cfg, tmp_path):
    for i in range(3):
        r = cli("feeds", "add", f"http://127.0.0.1:9/{i}.xml", "--id", f"MP_WXS_{i}", "--name", f"公众号{i}")
        assert r.exit_code == 0, r.output
    r = cli("feeds", "list", "--json")
    assert json.loads(r.stdout)["total"] == 3
    r = cli("tasks", "add", "morning", "--feeds", "MP_WXS_0,MP_WXS_1,MP_WXS_2,MP_WXS_9", "--json")
    assert r.exit_code == 0, r.output
    task_id = json.loads(r.stdout)["id"]
    r = cli("dispatch", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["allocations_created"] == 2  # 3 feeds, batch size 2
    assert data["online_nodes"] == 0
    assert data["warnings"][0]["missing_feeds"] == ["MP_WXS_9"]
    r = cli("dispatch", "--task", task_id)
    assert r.exit_code == 1 and "unfinished" in r.output
    r = cli("allocations", "--json", "--status", "pending")
    assert json.loads(r.stdout)["total"] == 2
    r = cli("allocations")
    assert r.exit_code == 0 and "pending" in r.output


def test_import_yaml_and_opml(cfg, tmp_path):
    y = tmp_path / "feeds.yaml"
    y.write_text("feeds:\n  - {id: A1, url: 'http://a/1.xml'}\n  - {url: 'http://a/2.xml', mp_name: two}\n",
                 encoding="utf-8")
    r = cli("feeds", "import", str(y), "--json")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["added"]) == 2
    o = tmp_path / "subs.opml"
    o.write_text('<?xml version="1.0"?><opml version="2.0"><body>'
                 '<outline text="Tech"><outline text="HN" type="rss" xmlUrl="http://h/rss"/></outline>'
                 '<outline text="A2 again" xmlUrl="http://a/2.xml"/></body></opml>', encoding="utf-8")
    r = cli("feeds", "import", str(o), "--json")
    assert json.loads(r.stdout) == {"added": [json.loads(r.stdout)["added"][0]], "skipped": ["http://a/2.xml"]}


def test_bad_input_is_one_line_and_changes_nothing(cfg, tmp_path):
    r = cli("feeds", "add", "not a url", "--id", "X")
    assert r.exit_code == 2 and "url" in r.output and "Traceback" not in r.output
    r = cli("tasks", "add", "t", "--feeds", "X", "--message-type", "7")
    assert r.exit_code == 2
    r = cli("tasks", "show", "nope")
    assert r.exit_code == 1 and "not found" in r.output
    r = cli("dispatch", "--task", "nope")
    assert r.exit_code == 1 and "not found" in r.output
    r = cli("allocations", "--status", "bogus")
    assert r.exit_code == 2
    bad = tmp_path / "bad.opml"
    bad.write_text('<!DOCTYPE x [<!ENTITY a "aaaa">]><opml/>', encoding="utf-8")
    r = cli("feeds", "import", str(bad))
    assert r.exit_code == 2 and "entit" in r.output
    assert json.loads(cli("feeds", "list", "--json").stdout)["total"] == 0


def test_allocations_watch_refreshes_and_has_a_finite_mode(cfg, tmp_path):
    cli("feeds", "add", "http://127.0.0.1:9/w.xml", "--id", "MP_WXS_W", "--name", "watched")
    assert cli("tasks", "add", "watched", "--feeds", "MP_WXS_W").exit_code == 0
    assert cli("dispatch").exit_code == 0
    r = cli("allocations", "--watch", "--interval", "0.2", "--count", "2")
    assert r.exit_code == 0, r.output
    assert "pending" in r.output and "online nodes 0" in r.output
