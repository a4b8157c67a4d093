"""Issue 19's missing management verbs and confirmations: feeds update/enable/disable, tasks
update of every field, tasks add --jitter, nodes set --capacity; remove asks (or --yes),
declining is not an error, and removing/disabling a feed warns about the tasks naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cascade_cli.cli.main import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("data_dir: data\ncascade:\n  node_type: parent\n", encoding="utf-8")
    monkeypatch.setenv("CASCADE_CONFIG", str(path))
    assert runner.invoke(app, ["init"]).exit_code == 0
    return path


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args))


def ok_json(*args: str) -> Any:
    r = cli(*args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def proc(cfg: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(cfg.parent), "COLUMNS": "200",
           "CASCADE_CONFIG": str(cfg), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cascade_cli", *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=60)


def _feeds_and_task(n: int = 2) -> None:
    for i in range(n):
        assert cli("feeds", "add", f"https://example.com/{i}.xml", "--id", f"F{i}").exit_code == 0
    assert cli("tasks", "add", "morning", "--feeds", ",".join(f"F{i}" for i in range(n)),
               "--cron", "0 9 * * *").exit_code == 0


def test_feeds_update_enable_disable(cfg: Path) -> None:
    _feeds_and_task(1)
    f = ok_json("feeds", "update", "F0", "--url", "https://example.org/new.xml", "--name",
                "新名字", "--kind", "atom")
    assert (f["url"], f["mp_name"], f["kind"]) == ("https://example.org/new.xml", "新名字", "atom")
    assert ok_json("feeds", "disable", "F0")["status"] == 0
    r = cli("feeds", "disable", "F0")
    assert "morning still name it" in " ".join(r.stderr.split())
    assert ok_json("feeds", "enable", "F0")["status"] == 1
    r = cli("feeds", "update", "F0", "--url", "ftp://nope")
    assert r.exit_code == 2 and "url" in r.stderr
    assert cli("feeds", "update", "F0").exit_code == 2  # nothing to change
    assert cli("feeds", "enable", "GHOST").exit_code == 1


def test_feeds_update_preferred_node_set_and_cleared(cfg: Path) -> None:
    assert cli("init", "--child", "c1").exit_code == 0
    _feeds_and_task(1)
    node_id = ok_json("nodes", "show", "c1")["id"]
    assert ok_json("feeds", "update", "F0", "--node", "c1")["preferred_node"] == node_id
    assert ok_json("feeds", "update", "F0", "--clear-node")["preferred_node"] is None


def test_tasks_update_every_field_and_clear(cfg: Path, tmp_path: Path) -> None:
    _feeds_and_task(2)
    tpl = tmp_path / "t.j2"
    tpl.write_text("{{ feed.mp_name }}", encoding="utf-8")
    t = ok_json("tasks", "update", "morning", "--name", "evening", "--feeds", "F1",
                "--cron", "*/5 * * * *", "--webhook", "https://hooks.example.com/x",
                "--message-type", "1", "--template", '{"t": "{{ feed.mp_name }}"}',
                "--headers", '{"X-Token": "abc"}', "--cookies", "a=1",
                "--overlap", "allow", "--misfire", "run_once", "--misfire-grace", "30",
                "--jitter", "12.5")
    assert t["name"] == "evening" and t["mps_id"] == ["F1"]
    assert t["cron_exp"] == "*/5 * * * *" and t["web_hook_url"] == "https://hooks.example.com/x"
    assert t["message_type"] == 1 and t["headers"] == {"X-Token": "abc"}
    assert t["cookies"] == "a=1" and t["overlap_policy"] == "allow"
    assert t["misfire_policy"] == "run_once" and t["misfire_grace"] == 30
    assert t["jitter"] == 12.5
    t = ok_json("tasks", "update", "evening", "--clear-cron", "--clear-webhook", "--headers",
                "{}", "--cookies", "", "--message-type", "0", "--template-file", str(tpl))
    assert t["cron_exp"] is None and t["web_hook_url"] is None
    assert t["headers"] is None and t["cookies"] is None
    assert t["message_template"] == "{{ feed.mp_name }}"
    # checked as a whole before saving: a bad cron, policy or contradiction changes nothing
    assert cli("tasks", "update", "evening", "--cron", "61 * * * *").exit_code == 2
    assert cli("tasks", "update", "evening", "--overlap", "sometimes").exit_code == 2
    assert cli("tasks", "update", "evening", "--cron", "0 9 * * *",
               "--clear-cron").exit_code == 2
    assert cli("tasks", "update", "evening").exit_code == 2
    assert ok_json("tasks", "show", "evening")["cron_exp"] is None


def test_tasks_add_jitter(cfg: Path) -> None:
    _feeds_and_task(1)
    t = ok_json("tasks", "add", "spread", "--feeds", "F0", "--cron", "0 * * * *",
                "--jitter", "300", "--misfire-grace", "90")
    assert t["jitter"] == 300 and t["misfire_grace"] == 90
    assert cli("tasks", "add", "bad", "--feeds", "F0", "--jitter", "4000").exit_code == 2


def test_nodes_set_capacity(cfg: Path) -> None:
    assert cli("init", "--child", "c1").exit_code == 0
    v = ok_json("nodes", "set", "c1", "--capacity", "6", "--description", "rack 2")
    assert v["max_capacity"] == 6 and v["description"] == "rack 2"
    assert cli("nodes", "set", "c1", "--capacity", "0").exit_code == 2
    assert cli("nodes", "set", "c1").exit_code == 2
    assert cli("nodes", "set", "ghost", "--capacity", "2").exit_code == 1


@pytest.mark.slow
def test_remove_asks_declining_is_not_an_error_and_warns_about_tasks(cfg: Path) -> None:
    """Real processes: what an operator sees at the prompt."""
    _feeds_and_task(2)
    r = proc(cfg, "feeds", "remove", "F0", stdin="n\n")
    err = " ".join(r.stderr.split())
    assert r.returncode == 0, err
    assert "feed F0 is named by task(s) morning" in err
    assert "Remove 1 feed(s): F0?" in err and "nothing changed" in err
    assert "error" not in err.lower()
    assert cli("feeds", "list", "--json").stdout.count('"id"') == 2
    r = proc(cfg, "feeds", "remove", "F0", "--yes")
    assert r.returncode == 0 and "removed 1 feed(s)" in r.stdout
    assert "named by task(s) morning" in " ".join(r.stderr.split())
    r = proc(cfg, "tasks", "remove", "morning")  # no answer on stdin counts as no
    assert r.returncode == 0 and "nothing changed" in r.stderr
    assert ok_json("tasks", "show", "morning")["name"] == "morning"
    r = runner.invoke(app, ["tasks", "remove", "morning"], input="y\n")
    assert r.exit_code == 0 and "removed task morning" in r.stdout
