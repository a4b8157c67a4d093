"""``cascade init``, ``init --child``, ``list-credentials`` and ``nodes ...`` through CliRunner."""

from __future__ import annotations

import json
import stat
from datetime import timedelta
from pathlib import Path

import yaml

from cascade_cli import auth
from cascade_cli.clock import SystemClock
from cascade_cli.config import child_config_problems, load_settings
from cascade_cli.store import nodes
from cascade_cli.store.engine import Store


def _store(parent_dir: Path) -> Store:
    return Store.from_url(f"sqlite:///{parent_dir / 'state' / 'cascade.db'}")


def test_init_creates_database_and_secret_file_and_is_safe_to_rerun(cli, parent_dir) -> None:
    r = cli("init")
    assert r.exit_code == 0, r.output
    assert "schema created" in r.stdout
    key_file = parent_dir / "state" / "admin-token.key"
    assert "(created)" in r.stdout and str(key_file) in r.stdout
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    content = key_file.read_text()
    assert len(content) >= 43 and content not in r.output

    r = cli("init", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["schema_before"] == report["schema_after"]
    assert report["admin_token_secret"] == "kept"
    assert key_file.read_text() == content  # never replaced

    key_file.chmod(0o644)
    r = cli("init")
    assert "permissions tightened" in r.stdout
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_init_child_prints_credentials_once_with_a_working_config_block(
        cli, parent_dir, tmp_path) -> None:
    r = cli("init", "--child", "child-1", "--desc", "[bold]shanghai[/bold]", "--capacity", "3")
    assert r.exit_code == 0, r.output
    out = r.stdout
    block = out[out.index("cascade:\n"):]
    block = block[:block.index("\n\n")]
    conf = yaml.safe_load(block)["cascade"]
    assert conf["enabled"] is True and conf["node_type"] == "child"
    assert conf["parent_api_url"] == "http://parent.example:8001"
    assert out.count(conf["api_secret"]) == 2  # summary line and block, nowhere else
    # the block pasted into a child's config.yaml is a complete, valid child configuration
    child_cfg = tmp_path / "child" / "config.yaml"
    child_cfg.parent.mkdir()
    child_cfg.write_text(block + "\n", encoding="utf-8")
    child = load_settings(child_cfg, environ={})
    assert child_config_problems(child) == [] and child.warnings == ()

    store = _store(parent_dir)
    with store.session() as s:
        n = nodes.get_node(s, "child-1")
        assert n.api_key == conf["api_key"] and n.max_capacity == 3
        assert n.description == "[bold]shanghai[/bold]"
        assert nodes.secret_matches(n, conf["api_secret"], SystemClock().now())
    store.dispose()


def test_init_child_json_prints_only_the_documented_object(cli) -> None:
    r = cli("init", "--child", "c-json", "--parent-url", "'10.0.0.5:8001/'", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)  # JSON alone on standard output
    assert set(data) == {"node_id", "node_name", "api_key", "api_secret", "parent_api_url",
                         "capacity"}
    assert data["node_name"] == "c-json" and data["parent_api_url"] == "http://10.0.0.5:8001"
    assert auth.API_KEY_RE.match(data["api_key"]) and auth.API_SECRET_RE.match(data["api_secret"])


def test_list_credentials_shows_status_and_never_a_secret(cli, parent_dir) -> None:
    r1 = json.loads(cli("init", "--child", "alpha", "--json").stdout)
    r2 = json.loads(cli("init", "--child", "beta", "--capacity", "7", "--json").stdout)
    r3 = json.loads(cli("init", "--child", "gamma", "--json").stdout)
    store = _store(parent_dir)
    now = SystemClock().now()
    with store.session() as s:
        nodes.get_node(s, "alpha").last_heartbeat_at = now - timedelta(seconds=5)
        nodes.get_node(s, "beta").last_heartbeat_at = now - timedelta(seconds=3600)
        hashes = [n.secret_hash for n in nodes.list_nodes(s)]
        pubkeys = [n.public_key for n in nodes.list_nodes(s)]
    store.dispose()
    cli("nodes", "disable", "gamma")

    outputs = []
    for args in (("list-credentials",), ("list-credentials", "--json"), ("init", "--list"),
                 ("init", "--list", "--json"), ("nodes", "list"), ("nodes", "list", "--json"),
                 ("nodes", "show", "alpha"), ("nodes", "show", "beta", "--json"),
                 ("init",), ("init", "--json")):
        r = cli(*args)
        assert r.exit_code == 0, (args, r.output)
        outputs.append(r.output)
    for text in outputs:
        for secret in [r1["api_secret"], r2["api_secret"], r3["api_secret"], *hashes, *pubkeys]:
            assert secret not in text
        assert "hmac-sha256" not in text

    table = outputs[0]
    for name, key in (("alpha", r1["api_key"]), ("beta", r2["api_key"]),
                      ("gamma", r3["api_key"])):
        line = next(ln for ln in table.splitlines() if f" {name} " in ln)
        assert key in line
    assert "online" in next(ln for ln in table.splitlines() if " alpha " in ln)
    assert "offline" in next(ln for ln in table.splitlines() if " beta " in ln)
    assert "disabled" in next(ln for ln in table.splitlines() if " gamma " in ln)
    assert "0/7" in next(ln for ln in table.splitlines() if " beta " in ln)

    listed = {v["name"]: v for v in json.loads(outputs[1])["list"]}
    assert listed["alpha"]["status"] == "online"
    assert listed["beta"]["status"] == "offline"
    assert listed["gamma"]["status"] == "disabled"
    assert listed["beta"]["max_capacity"] == 7
    assert listed["alpha"]["last_heartbeat_at"].endswith("Z")
    assert json.loads(outputs[3]) == json.loads(outputs[1]) == json.loads(outputs[5])


def test_offline_after_comes_from_the_config(cli, parent_dir) -> None:
    cli("init", "--child", "slow", "--json")
    store = _store(parent_dir)
    with store.session() as s:
        nodes.get_node(s, "slow").last_heartbeat_at = SystemClock().now() - timedelta(seconds=400)
    store.dispose()
    assert json.loads(cli("nodes", "show", "slow", "--json").stdout)["status"] == "offline"
    r = cli("nodes", "show", "slow", "--json", env={"CASCADE_PARENT__OFFLINE_AFTER": "3600"})
    assert json.loads(r.stdout)["status"] == "online"


def test_empty_list(cli) -> None:
    cli("init")
    r = cli("list-credentials")
    assert r.exit_code == 0 and "No child nodes yet" in r.stdout
    assert json.loads(cli("list-credentials", "--json").stdout)["list"] == []


def test_node_lifecycle(cli, parent_dir) -> None:
    created = json.loads(cli("init", "--child", "life", "--json").stdout)
    store = _store(parent_dir)
    clock = SystemClock()

    def node():  # type: ignore[no-untyped-def]
        with store.session() as s:
            return nodes.get_node(s, "life")

    r = cli("nodes", "disable", "life")
    assert r.exit_code == 0 and "disabled" in r.stdout and node().enabled is False
    r = cli("nodes", "enable", created["node_id"], "--json")  # by id
    assert r.exit_code == 0 and json.loads(r.stdout)["enabled"] is True

    # rotate with the configured default overlap (one day)
    r = cli("nodes", "rotate", "life")
    assert r.exit_code == 0, r.output
    new_secret = next(ln.split()[-1] for ln in r.stdout.splitlines()
                      if ln.strip().startswith("api_secret:"))
    assert new_secret != created["api_secret"] and "old secret valid until" in r.stdout
    n = node()
    assert nodes.secret_matches(n, new_secret, clock.now())
    assert nodes.secret_matches(n, created["api_secret"], clock.now())
    assert n.prev_valid_until is not None
    assert abs((n.prev_valid_until - clock.now()).total_seconds() - 86400) < 60

    # rotate with --overlap 0: only the newest secret works
    r = cli("nodes", "rotate", "life", "--overlap", "0", "--json")
    data = json.loads(r.stdout)
    assert set(data) >= {"node_id", "api_key", "api_secret", "previous_secret_valid_until"}
    assert data["previous_secret_valid_until"] is None and data["api_key"] == created["api_key"]
    n = node()
    assert nodes.secret_matches(n, data["api_secret"], clock.now())
    assert not nodes.secret_matches(n, new_secret, clock.now())

    r = cli("nodes", "revoke", "life")
    assert r.exit_code == 0 and "revoked" in r.stdout
    assert not nodes.secret_matches(node(), data["api_secret"], clock.now())
    assert json.loads(cli("nodes", "show", "life", "--json").stdout)["status"] == "revoked"

    # delete asks first; no answer (or "n") keeps the node, and declining is not an error
    r = cli("nodes", "delete", "life", input="n\n")
    assert r.exit_code == 0 and "nothing changed" in r.stderr
    r = cli("nodes", "delete", "life", input="")
    assert r.exit_code == 0
    assert node().name == "life"
    r = cli("nodes", "delete", "life", input="y\n")
    assert r.exit_code == 0 and "deleted" in r.stdout
    assert json.loads(cli("list-credentials", "--json").stdout)["list"] == []

    cli("init", "--child", "life2", "--json")
    r = cli("nodes", "delete", "life2", "--yes", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["deleted"] is True
    store.dispose()


def test_secret_file_location_is_configurable(cli, parent_dir) -> None:
    (parent_dir / "config.yaml").write_text(
        "data_dir: ./state\nparent:\n  auth:\n    admin_token_secret_file: keys/admin.key\n")
    r = cli("init")
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE((parent_dir / "keys" / "admin.key").stat().st_mode) == 0o600
