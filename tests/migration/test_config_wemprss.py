"""Issue 18: a we-mp-rss config.yaml: ``${VAR:-default}`` expanded, its own keys named with
what replaces them."""

from __future__ import annotations

from pathlib import Path

from cascade_cli.config import child_config_problems, load_settings

WEMPRSS_CONFIG = """\
port: ${PORT:-8002}
db: ${DB:-sqlite:///data/db.db}
secret: ${SECRET_KEY:-we-mp-rss}
token_expire_minutes: 4320
interval: ${SPAN_INTERVAL:-10}
cascade:
  enabled: ${CASCADE_ENABLED:-True}
  node_type: ${CASCADE_NODE_TYPE:-child}
  parent_api_url: ${CASCADE_PARENT_API_URL:-http://localhost:8001}
  api_key: ${CASCADE_API_KEY:-}
  api_secret: ${CASCADE_API_SECRET:-}
  sync_interval: ${CASCADE_SYNC_INTERVAL:-300}
  heartbeat_interval: ${CASCADE_HEARTBEAT_INTERVAL:-60}
  task_poll_interval: ${CASCADE_TASK_POLL_INTERVAL:-30}
  callback_url: ""
"""


def test_wemprss_config_is_expanded_and_its_keys_explained(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(WEMPRSS_CONFIG, encoding="utf-8")
    key = "CNa-b_" + "x1" * 14
    env = {"CASCADE_API_KEY": key, "CASCADE_API_SECRET": "CS" + "k_-9" * 8,
           "CASCADE_SYNC_INTERVAL": "120", "CASCADE_PARENT_API_URL": "parent:8001"}
    s = load_settings(path, environ=env, cwd=tmp_path)
    c = s.cascade
    assert c.enabled is True and c.node_type == "child"
    assert c.parent_api_url == "http://parent:8001" and c.sync_interval == 120
    assert c.heartbeat_interval == 60 and c.api_key == key
    assert child_config_problems(s) == []  # a key with '-' and '_' is accepted
    text = "\n".join(s.warnings)
    for key_name, replacement in (("cascade.task_poll_interval", "child.claim_wait"),
                                  ("cascade.callback_url", "long-poll"),
                                  ("'db'", "database.url"), ("'port'", "parent.port"),
                                  ("'secret'", "cascade token create"),
                                  ("token_expire_minutes", "admin_token_ttl")):
        line = next(w for w in s.warnings if key_name in w)
        assert replacement in line, line
    assert "unknown configuration key" not in text


def test_unset_variable_without_default_is_empty_and_named(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("cascade:\n  enabled: true\n  node_type: child\n"
                    "  parent_api_url: http://p:8001\n  api_key: ${CASCADE_API_KEY}\n",
                    encoding="utf-8")
    s = load_settings(path, environ={}, cwd=tmp_path)
    assert ("cascade.api_key" in dict(child_config_problems(s)))
