"""Configuration: where it comes from, environment overrides, validation errors, paths, URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade_cli.config import child_config_problems, load_settings, normalise_url
from cascade_cli.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- precedence --------------------------------------------------------------------------


def test_precedence_explicit_then_env_then_cwd_then_defaults(tmp_path: Path) -> None:
    explicit = write(tmp_path / "a" / "explicit.yaml", "parent: {port: 9001}\n")
    from_env = write(tmp_path / "b" / "env.yaml", "parent: {port: 9002}\n")
    cwd = tmp_path / "c"
    write(cwd / "config.yaml", "parent: {port: 9003}\n")
    env = {"CASCADE_CONFIG": str(from_env)}

    s = load_settings(explicit, environ=env, cwd=cwd)
    assert (s.parent.port, s.source.reason, s.source.path) == (9001, "--config", explicit)
    s = load_settings(None, environ=env, cwd=cwd)
    assert (s.parent.port, s.source.reason, s.source.path) == (9002, "CASCADE_CONFIG", from_env)
    s = load_settings(None, environ={}, cwd=cwd)
    assert (s.parent.port, s.source.reason) == (9003, "./config.yaml")
    s = load_settings(None, environ={}, cwd=tmp_path / "empty")
    assert (s.parent.port, s.source.reason, s.source.path) == (8001, "defaults", None)


def test_empty_file_and_empty_sections_are_defaults(tmp_path: Path) -> None:
    f = write(tmp_path / "c.yaml", "# nothing yet\ncascade:\nchild:\n")
    s = load_settings(f, environ={})
    assert s.cascade.heartbeat_interval == 60
    assert s.child.capacity == 2
    assert s.warnings == ()


# --- environment overrides ---------------------------------------------------------------


def test_env_overrides_single_keys_over_the_file(tmp_path: Path) -> None:
    f = write(tmp_path / "c.yaml", "cascade:\n  api_secret: from-file\n  parent_api_url: a:1\n"
                                   "parent:\n  port: 9000\n")
    env = {
        "CASCADE_API_SECRET": "CSfrom-env-123",
        "CASCADE_PARENT_API_URL": "'parent-host:8001/'",
        "CASCADE_PARENT__PORT": "9100",
        "CASCADE_DATABASE_URL": "postgresql://u@db/cascade",
        "CASCADE_CHILD__CAPACITY": "5",
        "CASCADE_LOG__LEVEL": "DEBUG",
        "CASCADE_PARENT__AUTH__ALLOW_PLAIN_SECRET": "false",
        "CASCADE_HEARTBEAT_INTERVAL": "15",
        "CASCADE_TEST_PG": "not a key: ignored",
    }
    s = load_settings(f, environ=env)
    assert s.cascade.api_secret == "CSfrom-env-123"
    assert s.cascade.parent_api_url == "http://parent-host:8001"
    assert s.parent.port == 9100
    assert s.database_url == "postgresql://u@db/cascade"
    assert s.child.capacity == 5
    assert s.log.level == "debug"
    assert s.parent.auth.allow_plain_secret is False
    assert s.cascade.heartbeat_interval == 15
    assert s.warnings == ()


def test_env_string_values_stay_text_even_when_they_look_like_yaml() -> None:
    s = load_settings(environ={"CASCADE_API_SECRET": "[not-yaml", "CASCADE_API_KEY": "12345"})
    assert s.cascade.api_secret == "[not-yaml"
    assert s.cascade.api_key == "12345"


def test_env_error_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"CASCADE_PARENT__PORT": "eighty"})
    assert str(info.value).startswith('parent.port: must be a whole number, got "eighty"')
    assert "environment variable CASCADE_PARENT__PORT" in str(info.value)


def test_unknown_env_key_is_warned_by_name() -> None:
    s = load_settings(environ={"CASCADE_PARENT__PROT": "1"})
    assert len(s.warnings) == 1
    assert "'parent.prot'" in s.warnings[0]
    assert "CASCADE_PARENT__PROT" in s.warnings[0]


# --- validation errors -------------------------------------------------------------------

BAD_VALUES = [
    ("cascade:\n  heartbeat_interval: abc\n",
     'cascade.heartbeat_interval: must be a positive number of seconds, got "abc"'),
    ("cascade:\n  sync_interval: -5\n",
     "cascade.sync_interval: must be a positive number of seconds, got -5"),
    ("cascade:\n  heartbeat_interval: 0\n",
     "cascade.heartbeat_interval: must be a positive number of seconds, got 0"),
    ("cascade:\n  enabled: maybe\n", 'cascade.enabled: must be true or false, got "maybe"'),
    ("cascade:\n  node_type: worker\n",
     "cascade.node_type: must be one of 'parent' or 'child', got \"worker\""),
    ("cascade:\n  parent_api_url: ftp://x\n",
     'cascade.parent_api_url: must be an http:// or https:// URL'),
    ("cascade:\n  auth_mode: magic\n", "cascade.auth_mode: must be one of"),
    ("parent:\n  port: 70000\n", "parent.port: must be at most 65535, got 70000"),
    ("parent:\n  port: eighty\n", 'parent.port: must be a whole number, got "eighty"'),
    ("parent:\n  port: 80.5\n", "parent.port: must be a whole number, got 80.5"),
    ("parent:\n  max_attempts: 0\n", "parent.max_attempts: must be at least 1, got 0"),
    ("parent:\n  lease_ttl: []\n", "parent.lease_ttl: must be a positive number of seconds"),
    ("parent:\n  auth: 5\n", "parent.auth: must be a mapping (key: value lines), got 5"),
    ("parent:\n  auth:\n    rotation_overlap: -1\n",
     "parent.auth.rotation_overlap: must be a number of seconds, at least 0, got -1"),
    ("child:\n  claim_wait: 61\n",
     "child.claim_wait: must be a number of seconds, at most 60, got 61"),
    ("child:\n  capacity: 0\n", "child.capacity: must be at least 1, got 0"),
    ("child:\n  commands:\n    x: {argv: ls}\n",
     'child.commands.x.argv: must be a list, got "ls"'),
    ("child:\n  commands:\n    x: {timeout: 1}\n", "child.commands.x.argv: is required"),
    ("log:\n  level: loud\n", "log.level: must be one of"),
    ("database:\n  pool_size: 0\n", "database.pool_size: must be at least 1, got 0"),
    ("parent:\n  scheduler:\n    timezone: Mars/Base\n",
     "parent.scheduler.timezone: must be an IANA time zone name such as 'Asia/Shanghai'"),
    ("parent: 5\n", "parent: must be a mapping (indented key: value lines), got 5"),
    ("- a\n- b\n", "the top level must be a mapping of sections"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_VALUES, ids=[b[1][:40] for b in BAD_VALUES])
def test_every_validation_error_names_key_value_and_expectation(
        tmp_path: Path, text: str, expected: str) -> None:
    f = write(tmp_path / "config.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(f, environ={})
    message = str(info.value)
    assert expected in message
    assert "\n" not in message  # one line
    if ":" in expected.split(" ")[0]:
        assert f"(in {f})" in message
    assert info.value.exit_code == 2


def test_a_bad_secret_value_is_never_echoed(tmp_path: Path) -> None:
    f = write(tmp_path / "c.yaml", "cascade:\n  api_secret: [CSsecretvalue1234567890]\n")
    with pytest.raises(ConfigError) as info:
        load_settings(f, environ={})
    assert "cascade.api_secret: must be a string, got <hidden>" in str(info.value)
    assert "CSsecretvalue" not in str(info.value)


def test_several_errors_are_reported_together(tmp_path: Path) -> None:
    f = write(tmp_path / "c.yaml", "cascade:\n  sync_interval: x\nparent:\n  port: 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings(f, environ={})
    assert "cascade.sync_interval" in str(info.value) and "parent.port" in str(info.value)
    assert info.value.key == "cascade.sync_interval"


@pytest.mark.parametrize(("text", "line", "column"), [
    ("cascade:\n  enabled: true\n    node_type: child\n", 3, 14),
    ("cascade:\n  api_key: \"unterminated\n", 3, 1),
    ("parent:\n\tport: 1\n", 2, 1),
])
def test_malformed_yaml_names_line_and_column(tmp_path: Path, text: str, line: int,
                                              column: int) -> None:
    f = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(f, environ={})
    assert f"{f}: malformed YAML at line {line}, column {column}" in str(info.value)


def test_missing_file_named_explicitly_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.yaml "
                                          r"\(named by --config\)"):
        load_settings(tmp_path / "nope.yaml", environ={})
    with pytest.raises(ConfigError, match=r"named by \$CASCADE_CONFIG"):
        load_settings(environ={"CASCADE_CONFIG": str(tmp_path / "nope.yaml")}, cwd=tmp_path)


def test_folder_or_binary_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        load_settings(tmp_path, environ={})
    f = tmp_path / "bin.yaml"
    f.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(f, environ={})


def test_unknown_keys_are_warned_by_full_path(tmp_path: Path) -> None:
    f = write(tmp_path / "c.yaml", "colour: red\ncascade:\n  heartbeat_intervall: 5\n"
                                   "parent:\n  auth:\n    skew: 1\n")
    s = load_settings(f, environ={})
    joined = "\n".join(s.warnings)
    for key in ("'colour'", "'cascade.heartbeat_intervall'", "'parent.auth.skew'"):
        assert key in joined
    assert len(s.warnings) == 3
    assert s.cascade.heartbeat_interval == 60  # the misspelt key did not count


# --- normalisation and paths -------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ('"http://parent:8001/"', "http://parent:8001"),
    ("'parent-server:8001'", "http://parent-server:8001"),
    ("  parent:8001///  ", "http://parent:8001"),
    ("https://p.example/base/", "https://p.example/base"),
    ("http://10.0.0.1:8001", "http://10.0.0.1:8001"),
])
def test_url_normalisation(tmp_path: Path, raw: str, expected: str) -> None:
    assert normalise_url(raw) == expected
    f = write(tmp_path / "c.yaml", f"cascade:\n  parent_api_url: {raw!r}\n"
                                   f"parent:\n  public_url: {raw!r}\n")
    s = load_settings(f, environ={})
    assert s.cascade.parent_api_url == expected
    assert s.parent.public_url == expected


@pytest.mark.parametrize("raw", ["http://parent:8001/api/v1/cascade",
                                 "parent:8001/api/v1/wx/cascade/",
                                 "http://parent:8001/API/V1/CASCADE"])
def test_parent_url_pasted_with_the_api_prefix_is_the_base_url(tmp_path: Path, raw: str) -> None:
    f = write(tmp_path / "c.yaml", f"cascade:\n  parent_api_url: {raw!r}\n")
    assert load_settings(f, environ={}).cascade.parent_api_url == "http://parent:8001"


def test_quoted_key_and_secret_are_stripped(tmp_path: Path) -> None:
    f = write(tmp_path / "c.yaml", "cascade:\n  api_key: \"'CNabc' \"\n  api_secret: ' CSx '\n")
    s = load_settings(f, environ={})
    assert (s.cascade.api_key, s.cascade.api_secret) == ("CNabc", "CSx")


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    conf_dir = tmp_path / "etc" / "cascade"
    f = write(conf_dir / "config.yaml",
              "data_dir: ./state\n"
              "database:\n  url: sqlite:///db/cascade.db\n"
              "child:\n  spool_path: spool/child.db\n"
              "parent:\n  auth:\n    admin_token_secret_file: keys/admin.key\n")
    other = tmp_path / "somewhere" / "else"
    other.mkdir(parents=True)
    s = load_settings(f, environ={}, cwd=other)
    assert s.data_dir == conf_dir / "state"
    assert s.database_url == f"sqlite:///{conf_dir / 'db' / 'cascade.db'}"
    assert s.spool_path == conf_dir / "spool" / "child.db"
    assert s.admin_token_secret_file == conf_dir / "keys" / "admin.key"


def test_default_paths_follow_the_config_file(tmp_path: Path) -> None:
    f = write(tmp_path / "conf" / "config.yaml", "{}\n")
    s = load_settings(f, environ={})
    assert s.data_dir == tmp_path / "conf" / "data"
    assert s.database_url == f"sqlite:///{tmp_path / 'conf' / 'data' / 'cascade.db'}"
    assert s.admin_token_secret_file == tmp_path / "conf" / "data" / "admin-token.key"
    assert s.spool_path == tmp_path / "conf" / "data" / "spool.db"


def test_absolute_paths_and_server_urls_are_kept(tmp_path: Path) -> None:
    f = write(tmp_path / "c.yaml", f"data_dir: {tmp_path / 'abs'}\n"
                                   "database:\n  url: mysql://root@127.0.0.1/x\n")
    s = load_settings(f, environ={})
    assert s.data_dir == tmp_path / "abs"
    assert s.database_url == "mysql://root@127.0.0.1/x"


def test_defaults_without_file_use_xdg_data_home(tmp_path: Path) -> None:
    s = load_settings(environ={"XDG_DATA_HOME": str(tmp_path / "xdg")}, cwd=tmp_path)
    assert s.data_dir == tmp_path / "xdg" / "cascade"


# --- the guide's cascade: block ----------------------------------------------------------


def test_guide_block_is_read_unchanged(tmp_path: Path) -> None:
    key = "CN" + "a" * 32
    f = write(tmp_path / "c.yaml",
              "cascade:\n"
              "  enabled: true\n"
              "  node_type: child\n"
              "  parent_api_url: \"http://parent-server:8001\"\n"
              f"  api_key: \"{key}\"\n"
              "  api_secret: \"CS" + "b" * 43 + "\"\n"
              "  sync_interval: 300\n"
              "  heartbeat_interval: 30\n")
    s = load_settings(f, environ={})
    assert s.cascade.enabled and s.cascade.node_type == "child"
    assert s.cascade.heartbeat_interval == 30 and s.cascade.sync_interval == 300
    assert child_config_problems(s) == []
    assert s.warnings == ()


def test_child_config_problems_name_each_missing_key() -> None:
    s = load_settings(environ={"CASCADE_API_KEY": "wrong"})
    keys = [k for k, _ in child_config_problems(s)]
    assert keys == ["cascade.enabled", "cascade.node_type", "cascade.parent_api_url",
                    "cascade.api_key", "cascade.api_secret"]


def test_settings_repr_never_shows_the_secret() -> None:
    s = load_settings(environ={"CASCADE_API_SECRET": "CSverysecretvalue_123456789"})
    assert "CSverysecretvalue" not in repr(s.model)
    assert "CSverysecretvalue" not in repr(s)


# --- fast paths (parent.http_fast_path, child.transport) ----------------------------------


def test_fast_path_settings_default_to_auto() -> None:
    s = load_settings(environ={})
    assert (s.parent.http_fast_path, s.child.transport) == ("auto", "auto")


@pytest.mark.parametrize("text", ["off", "Off", "'off'", "OFF", "false"])
def test_http_fast_path_off_as_yaml_reads_it(tmp_path: Path, text: str) -> None:
    """An unquoted ``off`` is a YAML boolean: it still means off."""
    path = write(tmp_path / "c.yaml", f"parent:\n  http_fast_path: {text}\n")
    assert load_settings(path, environ={}).parent.http_fast_path == "off"


def test_fast_path_settings_from_the_environment() -> None:
    s = load_settings(environ={"CASCADE_PARENT__HTTP_FAST_PATH": "off",
                               "CASCADE_CHILD__TRANSPORT": "httpx"})
    assert (s.parent.http_fast_path, s.child.transport) == ("off", "httpx")


@pytest.mark.parametrize("key,value,allowed", [
    ("parent.http_fast_path", "h11", "'auto' or 'off'"),
    ("parent.http_fast_path", True, "'auto' or 'off'"),
    ("child.transport", "httptools", "'auto' or 'httpx'"),
    ("child.transport", 1, "'auto' or 'httpx'"),
])
def test_bad_fast_path_values_name_the_key_and_the_choices(key: str, value: object,
                                                           allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, overrides={key: value})
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: must be one of {allowed}, got ")
