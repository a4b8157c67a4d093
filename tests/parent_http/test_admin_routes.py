"""Admin routes: nodes, feeds, tasks, logs, feed status; and the token CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.parent_http.conftest import envelope_err, envelope_ok

pytestmark = pytest.mark.anyio


async def test_node_management_never_leaks_hashes(api):
    tok = api.token()
    r = await api.admin("POST", "/nodes", tok, json={"name": "n1", "max_capacity": 3})
    created = envelope_ok(r)
    assert r.headers["cache-control"] == "no-store"  # it carries a secret
    assert created["api_secret"].startswith("CS") and created["api_key"].startswith("CN")
    listing = envelope_ok(await api.admin("GET", "/nodes", tok))
    text = json.dumps(listing)
    assert "hmac-sha256" not in text and created["api_secret"] not in text
    envelope_err(await api.admin("POST", "/nodes", tok, json={"name": "n1"}), 409,
                 "duplicate_name")
    envelope_err(await api.admin("POST", "/nodes", tok, json={"name": "bad name!"}), 422)
    d = envelope_ok(await api.admin("PUT", "/nodes/n1", tok, json={"enabled": False}))
    assert d["status"] == "disabled"
    creds = {"Authorization": f"AK-SK {created['api_key']}:{created['api_secret']}"}
    r = await api.client.get("/api/v1/cascade/heartbeat", headers=creds)
    envelope_err(r, 403, "node_disabled")
    envelope_ok(await api.admin("PUT", "/nodes/n1", tok, json={"enabled": True}))
    r = await api.admin("POST", "/nodes/n1/credentials", tok, params={"overlap": 0})
    rotated = envelope_ok(r)
    assert r.headers["cache-control"] == "no-store"  # it carries a secret
    assert rotated["api_secret"] != created["api_secret"]
    envelope_err(await api.client.get("/api/v1/cascade/heartbeat", headers=creds), 401)
    envelope_ok(await api.admin("DELETE", "/nodes/n1/credentials", tok))
    envelope_err(await api.admin("GET", "/nodes/nope", tok), 404, "not_found")
    envelope_ok(await api.admin("DELETE", "/nodes/n1", tok))
    envelope_err(await api.admin("GET", "/nodes/n1", tok), 404)


async def test_feeds_tasks_logs_and_status(api):
    tok = api.token()
    task_id = await api.setup_task(tok, n_feeds=2)
    d = envelope_ok(await api.admin("PUT", "/feeds/F_t1_0", tok, json={"mp_name": "renamed"}))
    assert d["mp_name"] == "renamed"
    envelope_err(await api.admin("PUT", "/feeds/nope", tok, json={"mp_name": "x"}), 404)
    envelope_err(await api.admin("POST", "/feeds", tok, json={"id": "bad id"}), 422)
    d = envelope_ok(await api.admin("PUT", f"/message-tasks/{task_id}", tok,
                                    json={"status": 0}))
    assert d["status"] == 0
    status = envelope_ok(await api.admin("GET", "/feed-status", tok))
    assert len(status) == 2
    logs = envelope_ok(await api.admin("GET", "/sync-logs", tok, params={"limit": 5}))
    assert set(logs) == {"list", "page"}
    envelope_ok(await api.admin("DELETE", f"/message-tasks/{task_id}", tok))
    envelope_ok(await api.admin("DELETE", "/feeds/F_t1_1", tok))
    envelope_err(await api.admin("GET", "/allocations", tok, params={"limit": 500}), 422)


async def test_dispatch_unknown_task_is_404(api):
    tok = api.token()
    envelope_err(await api.admin("POST", "/dispatch-task", tok, params={"task_id": "nope"}),
                 404)


def test_token_cli_create_list_revoke(tmp_path, monkeypatch):
    from cascade_cli.cli.main import app
    from cascade_cli.domain import tokens

    (tmp_path / "config.yaml").write_text("data_dir: ./data\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CASCADE_CONFIG", raising=False)
    runner = CliRunner()
    assert runner.invoke(app, ["init"]).exit_code == 0
    r = runner.invoke(app, ["token", "create", "--ttl", "30m", "--label", "ci"])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    assert token.count(".") == 2
    secret = tokens.read_secret(tmp_path / "data" / "admin-token.key")
    from cascade_cli.clock import SystemClock

    claims = tokens.decode(secret, token, SystemClock().now())
    assert 1790 <= claims["exp"] - claims["iat"] <= 1800
    r = runner.invoke(app, ["token", "list", "--json"])
    views = json.loads(r.stdout)["list"]
    assert [v["label"] for v in views] == ["ci"] and views[0]["status"] == "active"
    assert token not in r.stdout
    assert runner.invoke(app, ["token", "revoke", claims["jti"]]).exit_code == 0
    r = runner.invoke(app, ["token", "list", "--json"])
    assert json.loads(r.stdout)["list"][0]["status"] == "revoked"
    assert runner.invoke(app, ["token", "create", "--ttl", "soon"]).exit_code != 0


def test_parse_duration():
    from cascade_cli.domain.tokens import parse_duration
    from cascade_cli.errors import InvalidInput

    assert parse_duration("3600") == 3600 and parse_duration("30m") == 1800
    assert parse_duration("24h") == 86400 and parse_duration("7d") == 7 * 86400
    for bad in ("", "x", "-5", "0"):
        with pytest.raises(InvalidInput):
            parse_duration(bad)


async def test_task_names_stay_unique_through_the_api(api):
    tok = api.token()
    first = await api.setup_task(tok, n_feeds=1, name="daily")
    second = await api.setup_task(tok, n_feeds=1, name="weekly", prefix="G")
    r = await api.admin("POST", "/message-tasks", tok, json={"name": "daily",
                                                             "mps_id": ["F_daily_0"]})
    err = envelope_err(r, 409, "duplicate_name")
    assert first in err["message"]
    envelope_err(await api.admin("PUT", f"/message-tasks/{second}", tok,
                                 json={"name": "daily"}), 409, "duplicate_name")
    # Renaming a task to its own name, or to a free one, is fine.
    envelope_ok(await api.admin("PUT", f"/message-tasks/{first}", tok, json={"name": "daily"}))
    d = envelope_ok(await api.admin("PUT", f"/message-tasks/{second}", tok,
                                    json={"name": "monthly"}))
    assert d["name"] == "monthly"
    assert len(envelope_ok(await api.admin("GET", "/message-tasks", tok))) == 2


async def test_task_answer_warns_about_feeds_its_runs_will_skip(api):
    """The admin API says what `cascade tasks add` warns about (guide problem 4, 公众号不存在):
    feeds a task names that do not exist or are disabled, in the answer's message."""
    tok = api.token()
    task_id = await api.setup_task(tok, n_feeds=2, name="warned")
    r = await api.admin("PUT", f"/message-tasks/{task_id}", tok,
                        json={"mps_id": ["F_warned_0", "F_warned_1", "F_nowhere"]})
    assert r.status_code == 200
    assert r.json()["message"] == ("ok; warning: feeds F_nowhere do not exist: runs skip them")
    envelope_ok(await api.admin("PUT", "/feeds/F_warned_1", tok, json={"status": 0}))
    r = await api.admin("POST", "/message-tasks", tok,
                        json={"name": "second", "mps_id": ["F_warned_1", "F_gone"]})
    assert r.status_code == 200
    assert r.json()["message"] == ("ok; warning: feeds F_gone do not exist: runs skip them; "
                                   "feeds F_warned_1 are disabled: runs skip them")
    r = await api.admin("PUT", f"/message-tasks/{task_id}", tok,
                        json={"mps_id": ["F_warned_0"]})
    assert r.json()["message"] == "ok"
