"""Bad input is one clear line and exit code 1 or 2, never a traceback, and loses nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cascade_cli.clock import SystemClock
from cascade_cli.store import nodes
from cascade_cli.store.engine import Store


def assert_one_clean_error(r, code: int, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    assert isinstance(r.exception, SystemExit)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert r.stdout == ""


@pytest.fixture
def existing(cli, parent_dir):  # type: ignore[no-untyped-def]
    """A parent with one node whose credentials must survive every failed command."""
    creds = json.loads(cli("init", "--child", "keeper", "--json").stdout)
    yield creds
    store = Store.from_url(f"sqlite:///{parent_dir / 'state' / 'cascade.db'}")
    with store.session() as s:
        n = nodes.get_node(s, "keeper")
        assert n.api_key == creds["api_key"] and n.enabled
        assert nodes.secret_matches(n, creds["api_secret"], SystemClock().now())
    store.dispose()


def test_missing_config_named_with_option(cli, tmp_path: Path) -> None:
    r = cli("--config", str(tmp_path / "missing.yaml"), "init")
    assert_one_clean_error(r, 2, "config file not found", "missing.yaml", "--config")
    assert not (tmp_path / "data").exists()


def test_missing_config_named_by_env(cli, tmp_path: Path) -> None:
    r = cli("list-credentials", env={"CASCADE_CONFIG": str(tmp_path / "gone.yaml")})
    assert_one_clean_error(r, 2, "gone.yaml", "CASCADE_CONFIG")


def test_malformed_yaml(cli, existing, parent_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("cascade:\n  enabled: true\n   node_type: child\n")
    for args in (("init",), ("list-credentials",), ("init", "--child", "x")):
        r = cli("--config", str(bad), *args)
        assert_one_clean_error(r, 2, "malformed YAML at line 3, column")


@pytest.mark.parametrize(("text", "needle"), [
    ("cascade:\n  heartbeat_interval: abc\n",
     'cascade.heartbeat_interval: must be a positive number of seconds, got "abc"'),
    ("parent:\n  offline_after: soon\n", "parent.offline_after"),
    ("database: [1]\n", "database: must be a mapping"),
])
def test_wrong_types(cli, existing, tmp_path: Path, text: str, needle: str) -> None:
    bad = tmp_path / "types.yaml"
    bad.write_text(text)
    r = cli("--config", str(bad), "nodes", "list")
    assert_one_clean_error(r, 2, needle)


def test_unknown_key_is_a_warning_not_an_error(cli, existing, parent_dir: Path) -> None:
    cfg = parent_dir / "config.yaml"
    cfg.write_text(cfg.read_text() + "parnet:\n  port: 1\n")
    r = cli("list-credentials", "--json")
    assert r.exit_code == 0
    assert "unknown configuration key 'parnet'" in r.stderr
    assert json.loads(r.stdout)["list"][0]["name"] == "keeper"  # stdout stays pure JSON


@pytest.mark.parametrize("args", [
    ("nodes", "show", "ghost"), ("nodes", "disable", "ghost"), ("nodes", "enable", "ghost"),
    ("nodes", "rotate", "ghost"), ("nodes", "revoke", "ghost"), ("nodes", "delete", "ghost"),
    ("nodes", "delete", "ghost", "--yes"), ("nodes", "show", "ghost", "--json"),
])
def test_unknown_node_name(cli, existing, args) -> None:  # type: ignore[no-untyped-def]
    assert_one_clean_error(cli(*args), 1, "node not found: ghost")


def test_duplicate_node_name_keeps_the_existing_node(cli, existing) -> None:
    r = cli("init", "--child", "keeper")
    assert_one_clean_error(r, 1, "a node named 'keeper' already exists")
    assert "nodes rotate keeper" in r.stderr
    r = cli("init", "--child", "keeper", "--json")
    assert r.exit_code == 1 and r.stdout == ""


@pytest.mark.parametrize(("args", "needle"), [
    (("init", "--child", "bad name"), "invalid node name"),
    (("init", "--child", "ok", "--parent-url", "ftp://x"), "--parent-url"),
    (("init", "--list", "--child", "x"), "cannot be used together"),
    (("init", "--desc", "orphan"), "go with --child"),
    (("nodes", "rotate", "keeper", "--parent-url", "ftp://x"), "--parent-url"),
])
def test_invalid_arguments_create_nothing(cli, existing, args, needle) -> None:
    before = cli("list-credentials", "--json").stdout
    assert_one_clean_error(cli(*args), 2, needle)
    assert cli("list-credentials", "--json").stdout == before


@pytest.mark.parametrize("args", [("init", "--capacity", "0", "--child", "x"),
                                  ("nodes", "rotate", "keeper", "--overlap", "-1"),
                                  ("nodes", "frobnicate"), ("init", "--bogus")])
def test_usage_errors_exit_2(cli, existing, args) -> None:  # type: ignore[no-untyped-def]
    r = cli(*args)
    assert r.exit_code == 2 and "Traceback" not in r.output


@pytest.mark.parametrize("url", ["postgresql://127.0.0.1:1/x", "mysql://root@127.0.0.1:1/x"])
@pytest.mark.parametrize("args", [("init",), ("init", "--child", "n"), ("list-credentials",),
                                  ("nodes", "list", "--json")])
def test_unreachable_database(cli, url: str, args) -> None:  # type: ignore[no-untyped-def]
    r = cli(*args, env={"CASCADE_DATABASE_URL": url})
    assert_one_clean_error(r, 1, "database unreachable", "127.0.0.1:1")
    assert "fix:" in r.stderr


@pytest.mark.parametrize(("url", "needle"), [("oracle://x/y", "unsupported database"),
                                             ("not a url", "not a database URL")])
def test_unusable_database_url(cli, url: str, needle: str) -> None:
    assert_one_clean_error(cli("init", env={"CASCADE_DATABASE_URL": url}), 2, needle)


def test_commands_refuse_a_database_without_schema(cli) -> None:
    r = cli("list-credentials")
    assert_one_clean_error(r, 1, "has no Cascade schema")
    assert "cascade init" in r.stderr


def test_database_password_is_masked_in_errors(cli) -> None:
    r = cli("init", env={"CASCADE_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/x"})
    assert r.exit_code == 1 and "hunter2" not in r.output
