"""Fixtures of the foundation tests: a clean environment, a parent config and a CLI runner."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cascade_cli.cli.main import app


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No CASCADE_* variable of the developer's shell or CI leaks into a test."""
    for name in list(os.environ):
        if name.startswith("CASCADE_") and not name.startswith("CASCADE_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "250")  # Rich tables never fold keys in captured output
    return monkeypatch


@pytest.fixture
def parent_dir(tmp_path: Path) -> Path:
    """A parent's folder with a config.yaml whose data_dir is relative to it."""
    d = tmp_path / "parent"
    d.mkdir()
    (d / "config.yaml").write_text(
        "data_dir: ./state\n"
        "parent:\n"
        "  public_url: parent.example:8001/\n",
        encoding="utf-8")
    return d


@pytest.fixture
def cli(clean_env: pytest.MonkeyPatch, parent_dir: Path, tmp_path: Path
        ) -> Callable[..., Result]:
    """Invoke ``cascade`` in-process with CASCADE_CONFIG pointing at the parent's config,
    from another folder."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    clean_env.chdir(elsewhere)
    clean_env.setenv("CASCADE_CONFIG", str(parent_dir / "config.yaml"))
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None
               ) -> Result:
        return runner.invoke(app, list(args), input=input, env=env)

    return invoke
