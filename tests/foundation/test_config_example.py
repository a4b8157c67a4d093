"""config.example.yaml and docs/configuration.md document every key of SettingsModel, and the
example is the defaults: it loads without a warning and changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from cascade_cli.config import CommandSpec, SettingsModel, load_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.yaml"


def key_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(key_paths(ann, f"{prefix}{name}."))
        else:
            out.append(f"{prefix}{name}")
    return out


def lookup(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        assert isinstance(node, dict) and part in node, f"{path} missing in {EXAMPLE.name}"
        node = node[part]
    return node


def test_every_key_is_in_the_example() -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    paths = key_paths(SettingsModel)
    assert len(paths) > 50
    for path in paths:
        lookup(data, path)
    # the inside of child.commands entries is documented in the comments
    text = EXAMPLE.read_text(encoding="utf-8")
    for field in CommandSpec.model_fields:
        assert f"{field}:" in text.split("commands: {}")[0].rsplit("child:", 1)[1]


def test_every_key_has_a_comment() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.endswith(":"):
            continue  # comments and section headers
        # a value line is preceded by a comment, or belongs to a commented group of keys
        j = i - 1
        while j >= 0 and lines[j].strip() and not lines[j].strip().startswith("#") and \
                not lines[j].strip().endswith(":"):
            j -= 1
        assert j >= 0 and lines[j].strip().startswith("#"), f"no comment above: {line!r}"


def test_the_guide_block_comes_first() -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert next(iter(data)) == "cascade"
    assert list(data["cascade"])[:7] == ["enabled", "node_type", "parent_api_url", "api_key",
                                         "api_secret", "sync_interval", "heartbeat_interval"]


def test_example_loads_without_warnings_and_equals_the_defaults() -> None:
    loaded = load_settings(EXAMPLE, environ={})
    assert loaded.warnings == ()
    assert loaded.model == load_settings(environ={}).model


def test_example_holds_no_credentials() -> None:
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert data["cascade"]["api_key"] is None and data["cascade"]["api_secret"] is None


@pytest.mark.parametrize("path", key_paths(SettingsModel))
def test_configuration_doc_mentions_every_key(path: str) -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert f"`{path}`" in doc
