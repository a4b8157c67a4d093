"""tasks add (validation wiring), tasks next, deliveries list/retry, purge via CliRunner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cascade_cli.cli.main import app
from cascade_cli.clock import SystemClock
from cascade_cli.config import load_settings
from cascade_cli.store.engine import Store
from cascade_cli.store.models import Delivery, new_id

runner = CliRunner()


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    path.write_text("data_dir: data\n", encoding="utf-8")
    monkeypatch.setenv("CASCADE_CONFIG", str(path))
    r = runner.invoke(app, ["init"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["feeds", "add", "http://127.0.0.1:9/a.xml", "--id", "F1"])
    assert r.exit_code == 0, r.output
    return path


def cli(*args):
    return runner.invoke(app, list(args))


def test_tasks_add_rejects_bad_template_cron_and_webhook(cfg):
    r = cli("tasks", "add", "t", "--feeds", "F1", "--template", "hi\n{% for a in articles %}")
    assert r.exit_code == 2 and "line 2" in r.output and "column" in r.output
    r = cli("tasks", "add", "t", "--feeds", "F1", "--cron", "61 * * * *")
    assert r.exit_code == 2 and "invalid cron expression" in r.output
    r = cli("tasks", "add", "t", "--feeds", "F1", "--webhook", "ftp://x.example/h")
    assert r.exit_code == 2 and "http:// or https://" in r.output
    r = cli("tasks", "add", "t", "--feeds", "F1", "--template", "{{ feed.__class__ }}")
    assert r.exit_code == 2 and "sandbox" in r.output

    # Cookies without '=' and header values with line breaks: refused now, not dropped or
    # turned into a dead delivery at send time.
    r = cli("tasks", "add", "t", "--feeds", "F1", "--cookies", "novalue")
    assert r.exit_code == 2 and "name=value" in r.output and "Value error" not in r.output
    r = cli("tasks", "add", "t", "--feeds", "F1", "--headers", '{"X-A": "1\\r\\nEvil: 1"}')
    assert r.exit_code == 2 and "line breaks" in r.output
    assert json.loads(cli("tasks", "list", "--json").stdout)["list"] == []  # nothing half-made


def test_tasks_add_duplicate_name_and_missing_feed(cfg):
    r = cli("tasks", "add", "t", "--feeds", "F1,NOPE", "--cookies", "a=1; b=2")
    assert r.exit_code == 0, r.output
    assert "warning: feeds NOPE do not exist" in r.stderr
    r = cli("tasks", "add", "t", "--feeds", "F1")
    assert r.exit_code == 1 and "a task named 't' already exists" in r.stderr, r.output
    [task] = json.loads(cli("tasks", "list", "--json").stdout)["list"]
    assert task["mps_id"] == ["F1", "NOPE"] and task["cookies"] == "a=1; b=2"
    # Changing the feeds warns the same way (and says nothing once they all exist).
    r = cli("tasks", "update", "t", "--feeds", "F1,GONE")
    assert r.exit_code == 0 and "warning: feeds GONE do not exist" in r.stderr, r.output
    r = cli("tasks", "update", "t", "--feeds", "F1")
    assert r.exit_code == 0 and "warning" not in r.stderr, r.output


def test_tasks_next(cfg):
    r = cli("tasks", "add", "daily", "--feeds", "F1", "--cron", "0 0 9 * * *", "--json")
    assert r.exit_code == 0, r.output
    r = cli("tasks", "next", "daily", "-n", "3", "--json")
    assert r.exit_code == 0, r.output
    [row] = json.loads(r.stdout)["list"]
    times = [n["scheduled_for"] for n in row["next"]]
    assert len(times) == 3 and all(t.endswith("T09:00:00Z") for t in times)
    r = cli("tasks", "next")
    assert r.exit_code == 0 and "daily" in r.output and "09:00:00Z" in r.output
    r = cli("tasks", "next", "nope")
    assert r.exit_code == 1 and "not found" in r.output


def test_deliveries_list_retry_and_purge(cfg):
    settings = load_settings(cfg)
    store = Store.from_url(settings.database_url)
    now = SystemClock().now()
    ids = [new_id(), new_id()]
    with store.session() as s:
        for i, st in zip(ids, ("dead", "delivered"), strict=True):
            s.add(Delivery(id=i, idempotency_key=f"run:{i}", task_id="t1", feed_id="F1",
                           url="https://hooks.example.org/x", body="{}", status=st,
                           attempts=8, last_error="HTTP 500" if st == "dead" else None,
                           created_at=now, updated_at=now))
    store.dispose()
    r = cli("deliveries", "list", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["total"] == 2 and data["list"][0]["url_host"] == "hooks.example.org"
    r = cli("deliveries", "list", "--status", "dead", "--task", "t1")
    assert r.exit_code == 0 and "HTTP 500" in r.output
    r = cli("deliveries", "list", "--status", "bogus")
    assert r.exit_code == 2
    r = cli("deliveries", "retry", ids[1])
    assert r.exit_code == 1 and "already delivered" in r.output
    r = cli("deliveries", "retry")
    assert r.exit_code == 2
    r = cli("deliveries", "retry", "--dead", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"requeued": 1}
    r = cli("deliveries", "list", "--status", "pending", "--json")
    assert json.loads(r.stdout)["list"][0]["attempts"] == 0
    r = cli("purge", "--older-than", "30d", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["would_delete"]["deliveries"] == 0
    r = cli("purge", "--older-than", "1s")
    assert r.exit_code == 0 and "articles kept" in r.output
    r = cli("purge", "--older-than", "soon")
    assert r.exit_code == 2 and "not a duration" in r.output
