"""The guide's sample credentials (CNxxx..., CSxxx...) are named as placeholders, not sent."""

from __future__ import annotations

from cascade_cli.config import child_config_problems, load_settings


def _problems(key: str, secret: str) -> dict[str, str]:
    settings = load_settings(environ={}, overrides={"cascade": {
        "enabled": True, "node_type": "child", "parent_api_url": "http://parent-server:8001",
        "api_key": key, "api_secret": secret}})
    return dict(child_config_problems(settings))


def test_guide_placeholders_are_reported_with_the_fix():
    problems = _problems("CN" + "x" * 32, "CS" + "x" * 32)
    assert "placeholder" in problems["cascade.api_key"]
    assert "cascade init --child" in problems["cascade.api_key"]
    assert "placeholder" in problems["cascade.api_secret"]


def test_real_looking_credentials_pass():
    assert _problems("CN" + "aB3" * 10 + "xy", "CS" + "Zk_9-" * 8) == {}
